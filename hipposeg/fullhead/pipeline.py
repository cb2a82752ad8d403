"""Whole-head scans: register to the template, crop both hippocampi like Task04 crops, segment, map back.

Flow of :func:`segment_full_head`::

    scan --register_to_template--> affine MNI->scan
         --extract_boxes--> {"left": crop, "right": crop}   1 mm (cubic splines), Task04 orientation, right mirrored
         --crop_predictor--> (3, *crop.shape) probabilities  0 background, 1 anterior, 2 posterior
         --back onto the scan grid (trilinear), argmax, largest component per side-->
    labels in the input geometry: 1 left anterior, 2 left posterior, 3 right anterior, 4 right posterior
    (and, from the same mapped-back probabilities, the uncertainty map: :meth:`FullHeadResult.uncertainty_map`)

Orientation of the Task04 training crops (what a crop must look like)
    Evidence: ``python bench/archive/task04_orientation.py`` (results in ``bench/archive/task04_orientation.json``).
    The Task04 files all carry an identity 1 mm affine (the header says RAS but holds no real scanner
    geometry), so the orientation has to be read from the anatomy in the labels:

    * array axis 1 runs posterior -> anterior: the centroid of label 2 ("posterior") lies 18 voxels below
      that of label 1 ("anterior") along axis 1 in all 208 crops (never above);
    * array axis 2 runs inferior -> superior: the posterior part (body/tail) lies 7 voxels higher along
      axis 2 in all 208 crops (the hippocampal long axis rises towards the back);
    * array axis 0 is then left-right, and which way it points decides whether a crop shows a left or a
      mirrored right hippocampus. In real RAS heads (the three labelled full-head scans, 6 hippocampi)
      the posterior third of a *left* hippocampus lies lateral, i.e. at lower x, to its anterior third
      (-1.5, -2.7, -2.9 mm) and that of a *right* one at higher x (+0.1, +1.9, +1.4 mm). In the Task04
      crops the same shift along axis 0 is negative in 190 of 208 crops (mean -2.3, sd 1.7 voxels: one
      mode, no second group with the opposite sign);
    * shape: each Task04 label, centred, correlates better with the mean shape of the real left
      hippocampi (+ mirrored real right ones) than with its mirror image in 208 of 208 crops (mean
      correlation difference +0.14); the same vote, leave-one-out, puts each of the 3 real left
      hippocampi on the left (+0.16..+0.19) and each of the 3 right ones on the right (-0.15..-0.20).

    So every Task04 crop looks like a *left* hippocampus in RAS axes (axis 0 = +x towards the patient's
    right, 1 = +y anterior, 2 = +z superior). The task is "left and right hippocampus", so the right
    ones were stored mirrored (the arrays alone cannot tell a mirrored right crop from a left one, and
    it does not matter: the model has only ever seen this handedness).
    Crops here are therefore sampled along the template's RAS axes, and the *right* box is mirrored
    along x (its axis 0 points to the patient's left, i.e. medially), so that both crops look like the
    training crops. The mirroring lives only in the crop geometry: probabilities are mapped back
    through the same geometry, so no label ever changes side.

Crops
    ``crop.array`` is float32 raw scan intensity (the crop predictor normalises, as for any crop);
    ``crop.affine`` is the crop's *model frame*: 1 mm, identity directions (RAS), like a Task04 file,
    so a predictor that reorients its input to RAS leaves the array untouched. The true geometry is in
    ``crop.meta``: ``scan_affine`` (crop voxel -> scan world RAS mm), ``mni_affine`` (crop voxel -> MNI mm),
    ``side``, ``mirrored``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

from hipposeg.confidence import uncertainty_map
from hipposeg.data.readers import Image
from hipposeg.inference import keep_largest_component
from hipposeg.metrics import dice as dice_score
from hipposeg.fullhead.intensity import harmonise
from hipposeg.fullhead.registration import RegistrationResult, register_to_template
from hipposeg.fullhead.template import BOX_CENTRE_MM, BOX_SIZE_MM, SIDES, in_region
# the QC thresholds, with the evidence for each, live beside the table of flag codes they raise
from hipposeg.qc_flags import (LR_RATIO_RANGE, METRIC_FLAG_ABOVE, NEAR_REGION_FLAG_BELOW, REGION_DICE_FLAG_BELOW,
                               REGION_MARGIN_MM, sided)

FULL_HEAD_MIN_EXTENT_MM = 100.0  # Task04 crops measure 31-59 mm along every axis
LABEL_NAMES = {1: "left_anterior", 2: "left_posterior", 3: "right_anterior", 4: "right_posterior"}
SIDE_OFFSET = {"left": 0, "right": 2}
MIRRORED = {"left": False, "right": True}


CropPredictor = Callable[[Image], np.ndarray]


@dataclass
class FullHeadResult:
    labels: np.ndarray  # uint8, input grid, 0..4
    affine: np.ndarray  # the input's affine (voxel -> RAS mm)
    label_names: dict = field(default_factory=lambda: dict(LABEL_NAMES))
    qc: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    crops: dict = field(default_factory=dict)  # side -> crop Image
    registration: RegistrationResult | None = None
    # side -> (scan index box, entropy in bits of the crop's probabilities mapped back there): uncertainty_map()
    side_uncertainty: dict = field(default_factory=dict)

    def uncertainty_map(self) -> np.ndarray:
        """Per-voxel entropy (bits, :func:`hipposeg.confidence.uncertainty_map`) of the crop probabilities mapped
        back onto the input's grid, the probabilities the labels are the argmax of (trilinear, as the labels:
        :func:`probabilities_to_scan`); 0 outside the crops, the larger where the two boxes overlap. float32."""
        out = np.zeros(self.labels.shape, dtype=np.float32)
        for region, entropy in self.side_uncertainty.values():
            np.maximum(out[region], entropy, out=out[region])
        return out


def physical_extent_mm(image: Image) -> np.ndarray:
    return np.asarray(image.shape[:3], dtype=np.float64) * np.asarray(image.spacing[:3])


def is_full_head(image: Image) -> bool:
    """A field of view larger than :data:`FULL_HEAD_MIN_EXTENT_MM` along at least two axes."""
    return int((physical_extent_mm(image) > FULL_HEAD_MIN_EXTENT_MM).sum()) >= 2


def _rotation_part(linear: np.ndarray) -> np.ndarray:
    """The rotation nearest to ``linear`` (polar decomposition)."""
    u, _, vt = np.linalg.svd(linear)
    r = u @ vt
    if np.linalg.det(r) < 0:  # a reflection cannot come out of a registration of a proper scan, but be safe
        u[:, -1] *= -1
        r = u @ vt
    return r


def box_geometry(side: str, matrix_ras: np.ndarray) -> dict:
    """Voxel grid of the crop of ``side``: shape, crop voxel -> scan RAS, crop voxel -> MNI.

    The crop is centred on the template box centre mapped into the scan, its axes follow the template's
    x, y, z axes as rotated by the registration (so a tilted head gives an equally tilted crop), its
    voxels are 1 mm in the scan, and its extent is the template box scaled by the registration's stretch
    along each axis. The right crop's axis 0 points the other way (mirror image).
    """
    centre_mni = np.asarray(BOX_CENTRE_MM[side], dtype=np.float64)
    size_mni = np.asarray(BOX_SIZE_MM, dtype=np.float64)
    linear = matrix_ras[:3, :3]
    rot = _rotation_part(linear)
    stretch = np.linalg.norm(linear, axis=0)
    shape = np.maximum(8, np.round(size_mni * stretch)).astype(int)
    mirror = np.diag([-1.0 if MIRRORED[side] else 1.0, 1.0, 1.0])
    axes = rot @ mirror  # columns: scan RAS direction of crop axes 0, 1, 2 (1 mm steps)
    centre_scan = matrix_ras[:3, :3] @ centre_mni + matrix_ras[:3, 3]
    half = (shape - 1) / 2.0
    scan_affine = np.eye(4)
    scan_affine[:3, :3] = axes
    scan_affine[:3, 3] = centre_scan - axes @ half
    mni_affine = np.linalg.inv(matrix_ras) @ scan_affine
    return {"shape": tuple(int(s) for s in shape), "scan_affine": scan_affine, "mni_affine": mni_affine}


def _grid_points(shape) -> np.ndarray:
    return np.indices(shape, dtype=np.float32).reshape(3, -1)


def _sample(array: np.ndarray, vox_to_src: np.ndarray, shape, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Sample ``array`` on a grid of ``shape`` whose voxels map to ``array`` indices by ``vox_to_src``."""
    pts = _grid_points(shape)
    src = vox_to_src[:3, :3].astype(np.float32) @ pts + vox_to_src[:3, 3:4].astype(np.float32)
    out = ndimage.map_coordinates(array, src, order=order, mode="constant", cval=cval, prefilter=False)
    return out.reshape(shape)


def _sample_cubic(array: np.ndarray, vox_to_src: np.ndarray, shape, margin: int = 6) -> np.ndarray:
    """Like :func:`_sample` (points outside ``0..n-1`` along any axis get 0), but with interpolating cubic
    B-splines.

    Trilinear sampling smooths: a crop taken from a scan that was itself resampled loses the edges the model
    reads (moved whole-head copies came out up to 0.04 Dice lower). The spline coefficients are computed on
    the block of the scan around the crop only (plus ``margin`` voxels, so the block's own edges stay out of
    reach), not on the whole head. A block thinner than 4 voxels along an axis is sampled trilinearly.
    """
    pts = _grid_points(shape)
    src = (vox_to_src[:3, :3] @ pts + vox_to_src[:3, 3:4]).astype(np.float32)
    dims = np.asarray(array.shape[:3])
    out = np.zeros(src.shape[1], dtype=np.float32)
    inside = np.all((src >= 0) & (src <= (dims - 1)[:, None]), axis=0)
    if not inside.any():
        return out.reshape(shape)
    lo = np.clip(np.floor(src[:, inside].min(axis=1)).astype(int) - margin, 0, dims)
    hi = np.clip(np.ceil(src[:, inside].max(axis=1)).astype(int) + margin + 1, 0, dims)
    block = np.asarray(array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    order = 3 if min(block.shape) >= 4 else 1
    local = src[:, inside] - lo[:, None].astype(np.float32)
    out[inside] = ndimage.map_coordinates(block, local, order=order, mode="mirror", prefilter=order > 1)
    return out.reshape(shape)


def extract_boxes(image: Image, transform) -> dict[str, Image]:
    """The left and right hippocampus crops of ``image``: 1 mm, Task04 orientation, right side mirrored.

    ``transform`` is a :class:`RegistrationResult` (or a 4x4 MNI -> scan RAS matrix). Intensities are
    sampled with cubic splines (:func:`_sample_cubic`).
    """
    matrix_ras = transform.matrix_ras if isinstance(transform, RegistrationResult) else np.asarray(transform)
    array = np.asarray(image.array)  # cast block by block by the sampler, not the whole head
    to_index = np.linalg.inv(image.affine)
    crops = {}
    for side in SIDES:
        geo = box_geometry(side, matrix_ras)
        data = _sample_cubic(array, to_index @ geo["scan_affine"], geo["shape"])
        crops[side] = Image(
            array=data,
            affine=np.eye(4),
            path=f"{image.path}#{side}" if image.path else side,
            source="fullhead-crop",
            meta={
                "side": side,
                "mirrored": MIRRORED[side],
                "scan_affine": geo["scan_affine"],
                "mni_affine": geo["mni_affine"],
            },
        )
    return crops


def _scan_region(image_shape, scan_affine_inv_crop: np.ndarray, crop_shape) -> tuple[slice, ...]:
    """Index box of the scan that the crop covers (``scan_affine_inv_crop``: crop voxel -> scan index)."""
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in crop_shape], indexing="ij")).reshape(3, -1)
    idx = scan_affine_inv_crop[:3, :3] @ corners + scan_affine_inv_crop[:3, 3:4]
    lo = np.clip(np.floor(idx.min(axis=1)).astype(int), 0, np.asarray(image_shape[:3]))
    hi = np.clip(np.ceil(idx.max(axis=1)).astype(int) + 1, 0, np.asarray(image_shape[:3]))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def probabilities_to_scan(image: Image, crop: Image, probs: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """Resample crop probabilities (3, *crop.shape) onto the scan grid (trilinear); only where the crop is.

    Returns the scan index box and the (3, *box) probabilities there (outside the crop: background 1).
    """
    crop_to_scan_index = np.linalg.inv(image.affine) @ crop.meta["scan_affine"]
    region = _scan_region(image.shape, crop_to_scan_index, crop.shape)
    box_shape = tuple(s.stop - s.start for s in region)
    scan_box_to_crop = np.linalg.inv(crop_to_scan_index)
    offset = np.eye(4)
    offset[:3, 3] = [s.start for s in region]
    vox_to_crop = scan_box_to_crop @ offset
    out = np.empty((probs.shape[0],) + box_shape, dtype=np.float32)
    for c in range(probs.shape[0]):
        out[c] = _sample(
            np.asarray(probs[c], dtype=np.float32), vox_to_crop, box_shape, order=1, cval=1.0 if c == 0 else 0.0
        )
    return region, out


def template_region_in_scan(image: Image, side: str, matrix_ras: np.ndarray, region=None, margin_mm: float = 0.0):
    """The template hippocampus region of ``side`` mapped into the scan grid (within ``region`` if given)."""
    region = region or tuple(slice(0, s) for s in image.shape[:3])
    shape = tuple(s.stop - s.start for s in region)
    offset = np.eye(4)
    offset[:3, 3] = [s.start for s in region]
    vox_to_mni = np.linalg.inv(matrix_ras) @ image.affine @ offset
    pts = _grid_points(shape).astype(np.float64)
    mni = (vox_to_mni[:3, :3] @ pts + vox_to_mni[:3, 3:4]).T
    return in_region(mni, side, margin_mm).reshape(shape)


def segment_full_head(
    image: Image,
    crop_predictor: CropPredictor,
    registration: RegistrationResult | None = None,
    largest_component: bool = True,
) -> FullHeadResult:
    """Segment both hippocampi of a whole-head (or whole-brain) scan; labels in the input geometry."""
    t0 = time.perf_counter()
    reg = registration or register_to_template(image)
    t_reg = time.perf_counter()
    crops = extract_boxes(image, reg)
    t_crop = time.perf_counter()

    probs = {}
    for side, crop in crops.items():
        # the model sees the crop with Task04-like intensities; geometry (affine, meta) unchanged
        seen = Image(harmonise(crop.array), crop.affine, path=crop.path, source=crop.source, meta=crop.meta)
        p = np.asarray(crop_predictor(seen), dtype=np.float32)
        if p.shape != (3,) + crop.shape:
            raise ValueError(f"crop predictor returned shape {p.shape}, expected {(3,) + crop.shape}")
        probs[side] = p
    t_pred = time.perf_counter()

    labels = np.zeros(image.shape[:3], dtype=np.uint8)
    side_regions, side_uncertainty = {}, {}
    for side in SIDES:
        region, p = probabilities_to_scan(image, crops[side], probs[side])
        side_regions[side] = region
        side_uncertainty[side] = (region, uncertainty_map(p))  # a few ms: the box only
        cls = np.argmax(p, axis=0).astype(np.uint8)
        if largest_component:  # per side, the crop path's rule (26-connectivity, anterior + posterior merged)
            cls = keep_largest_component(cls)
        fg = cls > 0
        view = labels[region]
        write = fg & (view == 0)  # the boxes lie 17 mm apart in the template; should they meet, left keeps it
        view[write] = cls[write] + SIDE_OFFSET[side]
    t_back = time.perf_counter()

    qc = quality_control(image, labels, reg, side_regions)
    t_qc = time.perf_counter()
    timings = {
        "registration_s": t_reg - t0,
        "crops_s": t_crop - t_reg,
        "predict_s": t_pred - t_crop,
        "resample_back_s": t_back - t_pred,
        "qc_s": t_qc - t_back,
        "total_s": t_qc - t0,
    }
    return FullHeadResult(
        labels=labels, affine=np.asarray(image.affine), qc=qc, timings=timings, crops=crops, registration=reg,
        side_uncertainty=side_uncertainty,
    )


def quality_control(image: Image, labels: np.ndarray, reg: RegistrationResult, side_regions: dict) -> dict:
    """Registration metric, volumes and overlap with the template hippocampus region per side; ``flags``: the codes
    of :data:`hipposeg.qc_flags.QC_FLAGS` for what is implausible (registration, a missing side, a side away from
    the template region, left/right asymmetry). Whether a side's volume is plausible is the volume row's rule
    (:func:`hipposeg.volumes.volume_row`, ``volume_out_of_range``), not checked again here."""
    voxel_mm3 = image.voxel_volume_mm3
    flags = []
    qc = {"registration_metric": reg.metric, "registration": dict(reg.stages), "sides": {}}
    if reg.metric > METRIC_FLAG_ABOVE:
        flags.append("registration_poor_fit")
    volumes = {}
    for side in SIDES:
        region = side_regions[side]
        pred = (labels[region] > SIDE_OFFSET[side]) & (labels[region] <= SIDE_OFFSET[side] + 2)
        tmpl = template_region_in_scan(image, side, reg.matrix_ras, region)
        near_tmpl = template_region_in_scan(image, side, reg.matrix_ras, region, REGION_MARGIN_MM)
        dice = dice_score(pred, tmpl)
        volume = float(pred.sum()) * voxel_mm3
        inside = float((pred & tmpl).sum()) / max(1, int(pred.sum()))
        near = float((pred & near_tmpl).sum()) / max(1, int(pred.sum()))
        volumes[side] = volume
        qc["sides"][side] = {
            "volume_mm3": volume,
            "template_region_dice": dice,
            "fraction_in_template_region": inside,
            "fraction_near_template_region": near,
            "template_region_volume_mm3": float(tmpl.sum()) * voxel_mm3,
        }
        if volume == 0:
            flags.append(sided("hippocampus_missing", side))
            continue
        if dice < REGION_DICE_FLAG_BELOW:
            flags.append(sided("off_template_region", side))
        if near < NEAR_REGION_FLAG_BELOW:
            flags.append(sided("far_from_template_region", side))
    if volumes["left"] > 0 and volumes["right"] > 0:
        ratio = volumes["left"] / volumes["right"]
        qc["left_right_volume_ratio"] = ratio
        if not LR_RATIO_RANGE[0] <= ratio <= LR_RATIO_RANGE[1]:
            flags.append("left_right_ratio")
    qc["flags"] = flags
    qc["plausible"] = not flags
    return qc


def qc_json(result: FullHeadResult) -> dict:
    """The QC and timings of a result as plain JSON types."""

    def plain(value):
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, (np.floating, np.integer)):
            return value.item()
        return value

    return plain({"label_names": result.label_names, "qc": result.qc, "timings": result.timings})


def write_result(result: FullHeadResult, path, overwrite: bool = False) -> tuple:
    """Write the label map (uint8 NIfTI, input geometry) with its label-names sidecar ``<name>.json``, as
    every door writes masks (:func:`hipposeg.data.writers.write_segmentation`), and ``<name>_qc.json`` beside it."""
    import json
    from pathlib import Path

    from hipposeg.data.writers import check_writable, segmentation_paths, write_segmentation, write_text

    path = Path(path)
    name = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    qc_path = path.with_name(f"{name}_qc.json")
    for target in (*segmentation_paths(path), qc_path):
        check_writable(target, overwrite)
    names = {0: "background", **result.label_names}
    write_segmentation(path, result.labels, result.affine, names, overwrite=overwrite)
    write_text(qc_path, json.dumps(qc_json(result), indent=1) + "\n", overwrite=overwrite)
    return path, qc_path
