"""Tools to check the whole-head path without a trained model (tests and ``bench/fullhead.py``).

* :func:`oracle_predictor` - a crop predictor that resamples a ground-truth hippocampus label map into the
  crop (anterior = front half of the label along the crop's y axis, posterior = back half). With it the
  whole path (registration, boxes, mirroring, resampling back, label sides) is checked end to end: its
  Dice is 1 minus what two resamplings lose, provided the boxes hold the hippocampi.
* :func:`template_predictor` - predicts the template hippocampus region (an ellipsoid in MNI mm).
* :func:`dice_per_side`, :func:`left_is_left` - the issue's acceptance measures; :func:`overlap_per_side` -
  precision and recall per side.
* :func:`move_and_regrid` - a random rigid motion of a scan and its labels, resampled onto a grid of
  another orientation and voxel size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hipposeg.data.readers import Image, image_to_sitk
from hipposeg.fullhead.template import in_region
from hipposeg.metrics import dice

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def _split_anterior_posterior(p: np.ndarray) -> np.ndarray:
    """(3, *shape) probabilities from a foreground probability: front / back half along axis 1."""
    j = np.arange(p.shape[1], dtype=np.float64)[None, :, None] * np.ones_like(p, dtype=np.float64)
    mass = p > 0.5
    if mass.any():
        order = np.sort(j[mass])
        j_mid = order[len(order) // 2]
    else:
        j_mid = p.shape[1] / 2.0
    anterior = (j >= j_mid).astype(np.float32)
    return np.stack([1.0 - p, p * anterior, p * (1.0 - anterior)]).astype(np.float32)


def oracle_predictor(truth: Image):
    """Crop predictor that returns ``truth`` (labels > 0 = hippocampus, any side) resampled into the crop."""
    mask = (np.asarray(truth.array) > 0).astype(np.float32)
    to_index = np.linalg.inv(truth.affine)

    def predict(crop: Image) -> np.ndarray:
        m = to_index @ crop.meta["scan_affine"]
        pts = np.indices(crop.shape, dtype=np.float64).reshape(3, -1)
        src = m[:3, :3] @ pts + m[:3, 3:4]
        p = ndimage.map_coordinates(mask, src, order=1, mode="constant", cval=0.0).reshape(crop.shape)
        return _split_anterior_posterior(p)

    return predict


def template_predictor(crop: Image) -> np.ndarray:
    """Crop predictor that returns the template hippocampus region mapped into the crop."""
    side = crop.meta["side"]
    m = crop.meta["mni_affine"]
    pts = np.indices(crop.shape, dtype=np.float64).reshape(3, -1)
    mni = (m[:3, :3] @ pts + m[:3, 3:4]).T
    p = in_region(mni, side).reshape(crop.shape).astype(np.float32)
    return _split_anterior_posterior(p)


#: Pairing of predicted whole-head labels with the ground truth's sides: (side, predicted labels, true label).
_SIDE_PAIRS = (("left", (1, 2), 1), ("right", (3, 4), 2))


def _side_masks(labels: np.ndarray, truth: np.ndarray):
    """(side, predicted mask, true mask) for left (labels 1, 2 vs truth 1) and right (labels 3, 4 vs truth 2)."""
    for side, pred_labels, true_label in _SIDE_PAIRS:
        yield side, np.isin(labels, pred_labels), np.asarray(truth) == true_label


def dice_per_side(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """:func:`hipposeg.metrics.dice` of left (labels 1, 2 vs truth 1) and right (labels 3, 4 vs truth 2)."""
    return {side: dice(pred, true) for side, pred, true in _side_masks(labels, truth)}


def overlap_per_side(labels: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision (share of the predicted side inside the true side) and recall (share of the true side predicted)
    per side, with the same label pairing as :func:`dice_per_side`; they tell under- from over-segmentation.
    ``nan`` where the predicted (precision) or true (recall) side is empty."""
    out = {}
    for side, pred, true in _side_masks(labels, truth):
        hit = int((pred & true).sum())
        out[side] = {"precision": hit / int(pred.sum()) if pred.any() else float("nan"),
                     "recall": hit / int(true.sum()) if true.any() else float("nan")}
    return out


def side_centroids_ras(labels: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for side, values in (("left", (1, 2)), ("right", (3, 4))):
        ijk = np.argwhere(np.isin(labels, values))
        out[side] = (ijk @ affine[:3, :3].T + affine[:3, 3]).mean(axis=0) if len(ijk) else np.full(3, np.nan)
    return out


def left_is_left(labels: np.ndarray, affine: np.ndarray, truth: Image | None = None) -> bool:
    """The left labels lie on the patient's left: at lower RAS x than the right labels.

    With ``truth`` (which may be rotated in the world), "left" is judged along the axis from the true
    right to the true left hippocampus instead of the world x axis.
    """
    c = side_centroids_ras(labels, affine)
    if truth is None:
        return bool(c["left"][0] < c["right"][0])
    t = {
        s: (np.argwhere(truth.array == v) @ truth.affine[:3, :3].T + truth.affine[:3, 3]).mean(axis=0)
        for s, v in (("left", 1), ("right", 2))
    }
    axis = t["left"] - t["right"]
    return bool(np.dot(c["left"] - c["right"], axis) > 0)


def random_rigid(rng: np.random.Generator, max_degrees: float = 20.0, max_mm: float = 25.0) -> tuple:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.5, 1.0) * max_degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    direction = rng.normal(size=3)
    shift = direction / np.linalg.norm(direction) * rng.uniform(0.5, 1.0) * max_mm
    return rot, shift, float(np.rad2deg(angle))


_SPACINGS = ((1.0, 1.0, 1.0), (1.2, 1.2, 1.2), (0.9, 0.9, 1.3), (1.3, 1.0, 1.1), (0.8, 1.1, 1.4))


def _axes_from_code(code: str) -> np.ndarray:
    """3x3 direction matrix (columns = RAS direction of voxel axes i, j, k) of an orientation code."""
    unit = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
    return np.array([unit[c] for c in code], dtype=np.float64).T


def _resample_onto(array: np.ndarray, affine: np.ndarray, grid: tuple, linear: bool, transform=None) -> np.ndarray:
    """``array`` (on ``affine``) resampled onto ``grid`` = (shape, affine), through a SimpleITK ``transform``
    (output LPS point -> input LPS point; identity if None); linear or nearest-neighbour, 0 outside."""
    import SimpleITK as sitk

    shape, new_affine = grid
    reference = image_to_sitk(Image(np.zeros(tuple(shape), dtype=np.uint8), new_affine))
    out = sitk.Resample(image_to_sitk(Image(array, affine)), reference, transform or sitk.Transform(),
                        sitk.sitkLinear if linear else sitk.sitkNearestNeighbor, 0.0)
    return np.ascontiguousarray(sitk.GetArrayFromImage(out).transpose(2, 1, 0))


def move_and_regrid(
    image: Image, truth: Image, rng: np.random.Generator, max_degrees: float = 20.0, max_mm: float = 25.0
) -> tuple[Image, Image, dict]:
    """Move ``image`` and ``truth`` by a random rigid transform and resample onto a new grid.

    The new grid has a random orientation code and voxel size and covers the moved head. The image is
    resampled linearly, the labels by nearest neighbour.
    """
    import SimpleITK as sitk

    pairs = ("RL", "AP", "SI")
    code = "".join(pairs[a][rng.integers(2)] for a in rng.permutation(3))  # random orientation code
    spacing = np.asarray(_SPACINGS[rng.integers(len(_SPACINGS))])
    rot, shift, angle = random_rigid(rng, max_degrees, max_mm)
    centre = image.affine[:3, :3] @ ((np.asarray(image.shape) - 1) / 2.0) + image.affine[:3, 3]
    move = np.eye(4)  # old world -> new world (RAS)
    move[:3, :3] = rot
    move[:3, 3] = centre + shift - rot @ centre
    axes = _axes_from_code(code)

    # bounding box of the moved field of view, in the new grid's axes
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in image.shape], indexing="ij")).reshape(3, -1)
    world = move[:3, :3] @ (image.affine[:3, :3] @ corners + image.affine[:3, 3:4]) + move[:3, 3:4]
    local = axes.T @ world  # coordinates along the new axes
    lo, hi = local.min(axis=1), local.max(axis=1)
    shape = np.ceil((hi - lo) / spacing).astype(int) + 1
    new_affine = np.eye(4)
    new_affine[:3, :3] = axes * spacing
    new_affine[:3, 3] = axes @ lo

    back = _FLIP @ np.linalg.inv(move) @ _FLIP  # new LPS -> old LPS
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in back[:3, :3].ravel()])
    transform.SetTranslation([float(v) for v in back[:3, 3]])
    grid = (tuple(int(v) for v in shape), new_affine)
    moved = _resample_onto(np.asarray(image.array, dtype=np.float32), image.affine, grid, linear=True,
                           transform=transform)
    moved_truth = _resample_onto(np.asarray(truth.array, dtype=np.uint8), truth.affine, grid, linear=False,
                                 transform=transform)
    info = {"rotation_deg": angle, "translation_mm": float(np.linalg.norm(shift)), "orientation": code,
            "spacing": [float(v) for v in spacing], "shape": [int(v) for v in shape], "move_ras": move}
    return (
        Image(array=moved, affine=new_affine, path=f"{image.path}#moved", source=image.source),
        Image(array=moved_truth, affine=new_affine, path=f"{truth.path}#moved", source=truth.source),
        info,
    )


def thicken_slices(image: Image, truth: Image, thickness_mm: float) -> tuple[Image, Image, dict]:
    """A thick-slice acquisition of ``image``: its voxel axis closest to anterior-posterior gets ``thickness_mm``
    spacing, the other two keep theirs. The simulation is training's (:func:`hipposeg.transforms.thick_slice_grid`:
    a box slice profile, each thick voxel the mean of the scan over its slice; the first slice starts where the scan
    starts and a remainder thinner than a slice at the far end is not acquired). Each label of ``truth`` gets the same
    slice profile and keeps the thick voxels it covers by half or more."""
    from hipposeg.transforms import thick_slice_grid

    if not thickness_mm > 0:
        raise ValueError(f"slice thickness must be positive, not {thickness_mm}")
    spacing = np.asarray(image.spacing, dtype=np.float64)
    axis = int(np.argmax(np.abs(image.affine[:3, :3])[1] / spacing))  # the voxel axis along y (A-P)
    thickness = thickness_mm / spacing[axis]  # in voxels of the scan
    thick, new_affine = thick_slice_grid(np.asarray(image.array, dtype=np.float32), image.affine, axis, thickness)
    labels = np.zeros(thick.shape, dtype=np.uint8)
    for value in np.unique(truth.array)[1:]:
        cover, _ = thick_slice_grid(np.asarray(truth.array) == value, truth.affine, axis, thickness)
        labels[cover >= 0.5] = value
    new_spacing = spacing.copy()
    new_spacing[axis] = thickness_mm
    info = {"thickness_mm": float(thickness_mm), "thick_axis": axis, "spacing": [float(v) for v in new_spacing]}
    return (Image(thick, new_affine, path=f"{image.path}#thick", source=image.source),
            Image(labels, new_affine, path=f"{truth.path}#thick", source=truth.source), info)
