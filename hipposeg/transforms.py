"""Transforms of hipposeg that stock MONAI lacks, and the deterministic volume chain.

The training recipes themselves are lists of MONAI transforms in the bundle's training configs
(``train.json`` ``train#preprocessing`` for the 2.5D core, ``train_3d.json`` for the 3D partner); this module holds
only the pieces they call that MONAI does not have, each with the reason in its docstring:

* :func:`volume_transforms` — load, channel-first, orientation to RAS, resample to a target spacing
  (linear for images, nearest for labels), intensity normalisation. Deterministic: run once and cached.
* :func:`cut_slices` — the non-empty-slice filter: a 3D case becomes 2D (or 2.5D) training samples.
* :class:`RandLeftRightFlipd` — a left-right flip of 2D slices that leaves sagittal slices alone.
* Thick slices, the one simulation used by training and by both benchmarks (``bench/thick_slices.py``,
  :func:`hipposeg.fullhead.evaluation.thicken_slices`): a box slice profile (a thick slice records the mean of the
  1 mm image over its thickness) at a given phase (:func:`thick_slice_edges`), either resampled back to the 1 mm
  grid (:func:`thick_slice_operator`, :func:`thicken_along_axis`, the training transform :class:`RandThickSlicesd`)
  or kept on the thick grid (:func:`thick_slice_grid`, for scoring on the thick grid).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    Randomizable,
    RandomizableTransform,
    Spacingd,
)

IMAGE, LABEL = "image", "label"
ENCODER_DIVISOR = 32  # the EfficientNet encoder downsamples 5 times


def volume_transforms(
    keys: Sequence[str] = (IMAGE, LABEL),
    pixdim: Sequence[float] | None = (1.0, 1.0, 1.0),
    load: bool = True,
) -> Compose:
    """Load -> channel first -> RAS -> resample to ``pixdim`` -> z-score the image (invertible)."""
    keys = list(keys)
    interp = ["bilinear" if k == IMAGE else "nearest" for k in keys]
    chain = []
    if load:
        chain.append(LoadImaged(keys=keys, reader="NibabelReader", image_only=True))
    chain.append(EnsureChannelFirstd(keys=keys, channel_dim="no_channel"))
    chain.append(Orientationd(keys=keys, axcodes="RAS", labels=None))
    if pixdim is not None:
        chain.append(Spacingd(keys=keys, pixdim=list(pixdim), mode=interp))
    chain.append(NormalizeIntensityd(keys=IMAGE))
    chain.append(EnsureTyped(keys=keys, dtype=[torch.float32 if k == IMAGE else torch.uint8 for k in keys],
                             track_meta=True))
    return Compose(chain)


def context_indices(n_slices: int, index: int, context: int) -> list[int]:
    """Indices of the ``context`` slices centred on ``index`` (odd ``context``), edges replicated."""
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be a positive odd number of slices, got {context}")
    half = context // 2
    return [min(max(index + d, 0), n_slices - 1) for d in range(-half, half + 1)]


def nonempty_slice_indices(label: np.ndarray, axis: int) -> np.ndarray:
    """Indices along ``axis`` (of a 3D label array) whose slice holds any foreground."""
    other = tuple(a for a in range(3) if a != axis)
    return np.flatnonzero(np.asarray(label).any(axis=other))


def cut_slices(
    image: np.ndarray,
    label: np.ndarray,
    axis: int,
    context: int = 1,
    empty_fraction: float = 0.0,
    rng: np.random.Generator | None = None,
) -> list[dict]:
    """The non-empty-slice filter.

    ``image`` and ``label`` are 3D arrays (no channel). Returns one sample per slice along ``axis`` whose label
    is non-empty — ``{"image": (context, H, W), "label": (1, H, W), "slice_axis", "slice_index"}`` — plus
    ``round(empty_fraction * n_nonempty)`` empty slices drawn at random (so the model also learns to predict
    nothing). The ``context`` input channels are the neighbouring slices, edges replicated ("2.5D").
    """
    image, label = np.asarray(image), np.asarray(label)
    if image.shape != label.shape or image.ndim != 3:
        raise ValueError(f"expected matching 3D image and label, got {image.shape} and {label.shape}")
    keep = nonempty_slice_indices(label, axis)
    if empty_fraction > 0:
        empty = np.setdiff1d(np.arange(image.shape[axis]), keep)
        n_empty = min(len(empty), int(round(empty_fraction * len(keep))))
        if n_empty:
            rng = rng or np.random.default_rng(0)
            keep = np.sort(np.concatenate([keep, rng.choice(empty, n_empty, replace=False)]))
    img = np.moveaxis(image, axis, 0).astype(np.float32, copy=False)
    lab = np.moveaxis(label, axis, 0)
    samples = []
    for i in keep:
        samples.append({
            IMAGE: np.ascontiguousarray(img[context_indices(img.shape[0], int(i), context)]),
            LABEL: np.ascontiguousarray(lab[int(i)][None].astype(np.uint8)),
            "slice_axis": axis,
            "slice_index": int(i),
        })
    return samples


class RandLeftRightFlipd(Randomizable, MapTransform):
    """Mirror a slice left-right (world x), which turns a left hippocampus into a plausible right one.

    Slices cut along axis 1 (coronal) or 2 (axial) have world x as their first in-plane axis; sagittal slices
    (axis 0) have no left-right direction in plane and are left alone. Anterior/posterior and superior/inferior
    are never flipped: they carry the meaning of the labels.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5):
        MapTransform.__init__(self, keys)
        self.prob = prob
        self._do = False

    def randomize(self, data=None) -> None:
        self._do = self.R.random_sample() < self.prob

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        if self._do and int(d.get("slice_axis", 2)) != 0:
            for key in self.key_iterator(d):
                d[key] = torch.flip(torch.as_tensor(d[key]), dims=[1])
        return d


# ------------------------------------------------------------------------------------------------ thick slices
#
# The one thick-slice simulation of hipposeg: training (RandThickSlicesd for the 3D partner, SliceDataset's
# thick-slice samples for the 2.5D core), bench/thick_slices.py and the whole-head thick copies
# (hipposeg.fullhead.evaluation.thicken_slices) all acquire thick slices through thick_slice_edges/_box_average.


def thick_slice_edges(n: int, thickness: float, phase: float = 0.0) -> np.ndarray:
    """The edges of the thick slices along a line of ``n`` voxels, in voxel-edge coordinates (voxel ``i`` covers
    ``[i, i + 1)``): thick slice ``k`` covers ``[k * thickness - phase, (k + 1) * thickness - phase)``
    (``0 <= phase < thickness``: how far the first slice starts before the line; a larger phase is taken modulo the
    thickness), clipped to ``[0, n]``; ``m + 1`` edges for ``m`` slices."""
    if not thickness > 0 or n < 1:
        raise ValueError(f"need n >= 1 and a positive thickness, got n={n}, thickness={thickness}")
    phase = float(phase) % thickness
    edges = np.arange(-phase, n + thickness, thickness)
    edges = np.clip(edges, 0.0, n)
    return np.unique(edges)  # the clipped first/last edges may repeat


def _box_average(edges: np.ndarray, n: int) -> np.ndarray:
    """(m, n): row k is the mean over thick slice ``[edges[k], edges[k + 1])`` of a line of ``n`` voxels, each voxel
    a constant box (the overlap of the slice with each voxel, normalised)."""
    lo, hi = edges[:-1, None], edges[1:, None]
    voxel = np.arange(n)[None, :]
    overlap = np.clip(np.minimum(hi, voxel + 1) - np.maximum(lo, voxel), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def thick_slice_operator(n: int, thickness: float, phase: float = 0.0) -> np.ndarray:
    """The (n, n) matrix that turns a line of ``n`` 1-voxel samples into the same line acquired with slices
    ``thickness`` voxels thick and resampled back to the 1-voxel grid.

    The slice profile is a box: each 1-voxel sample is the constant value of its voxel, and a thick slice records
    the mean over its extent (:func:`thick_slice_edges`; slices at the ends of the line are clipped to it). The
    thick slices are then sampled back at the voxel centres by linear interpolation between their centres
    (constant beyond the first and last centre). Rows sum to 1; ``thickness=1, phase=0`` is the identity.
    """
    edges = thick_slice_edges(n, thickness, phase)
    average = _box_average(edges, n)  # (m, n)
    # back to the voxel centres, linearly between the thick slices' centres
    centres = (edges[:-1] + edges[1:]) / 2
    back = np.stack([np.interp(np.arange(n) + 0.5, centres, np.eye(len(centres))[k]) for k in range(len(centres))],
                    axis=1)  # (n, m)
    return back @ average


def thicken_along_axis(image: torch.Tensor, axis: int, thickness: float, phase: float = 0.0) -> torch.Tensor:
    """``image`` (C, X, Y, Z) as if acquired with slices ``thickness`` voxels thick along spatial ``axis`` (the
    first slice starting ``phase`` voxels before the image) and resampled back to its grid
    (:func:`thick_slice_operator`: box slice profile)."""
    x = torch.as_tensor(image)
    n = x.shape[axis + 1]
    op = torch.as_tensor(thick_slice_operator(n, thickness, phase), dtype=torch.float32)
    out = torch.tensordot(x.float().movedim(axis + 1, -1), op.T, dims=1)  # (..., n) @ (n, n)^T
    return out.movedim(-1, axis + 1).to(x.dtype)


def thick_slice_grid(array: np.ndarray, affine: np.ndarray, axis: int, thickness: float,
                     phase: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (3D, on ``affine``) as acquired with slices ``thickness`` voxels thick along voxel ``axis``, on the
    thick grid itself: ``(thick array (float32), thick affine)``, for benchmarks that score on the thick grid.

    The same box profile and slice positions as :func:`thick_slice_operator` (:func:`thick_slice_edges`: the first
    slice starts ``phase`` voxels before the array), but only the slices that lie wholly inside the array are
    kept (a scanner records no partial slice), so the thick grid is regular: its voxels are ``thickness`` times
    longer along ``axis`` and its first voxel's centre is the first complete slice's centre. The other axes keep
    their voxels.
    """
    array = np.asarray(array)
    n = array.shape[axis]
    if not thickness > 0:
        raise ValueError(f"slice thickness must be positive, not {thickness}")
    phase = float(phase) % thickness
    starts = np.arange(-phase, n, thickness)
    eps = 1e-6 * thickness
    complete = starts[(starts >= -eps) & (starts + thickness <= n + eps)]
    if complete.size == 0:
        raise ValueError(f"no {thickness:g}-voxel slice fits in {n} voxels")
    edges = np.clip(np.append(complete, complete[-1] + thickness), 0.0, n)
    average = _box_average(edges, n)  # (m, n)
    thick = np.tensordot(average, np.moveaxis(array.astype(np.float64), axis, 0), axes=1)
    thick = np.ascontiguousarray(np.moveaxis(thick, 0, axis), dtype=np.float32)
    new_affine = np.asarray(affine, dtype=np.float64).copy()
    first_centre = complete[0] + thickness / 2 - 0.5  # voxel-edge coordinate -> index coordinate
    new_affine[:3, 3] = new_affine[:3, 3] + new_affine[:3, axis] * first_centre
    new_affine[:3, axis] *= thickness
    return thick, new_affine


class RandThickSlicesd(RandomizableTransform, MapTransform):
    """Simulate a thick-slice (anisotropic) acquisition of a 1 mm image: along one random axis, average blocks
    of ``thickness`` voxels (a box slice profile, what a thick slice records), the first block starting at a random
    phase, and interpolate back linearly to the original grid (:func:`thicken_along_axis`). Labels are left alone:
    the network learns to draw the 1 mm truth from a thick-slice image.

    ``thickness`` is drawn from ``thickness_range`` (in voxels, e.g. 1.3-2.5 for 1.3-2.5 mm slices of a 1 mm crop).

    Why a custom transform and not MONAI's ``RandSimulateLowResolutiond``: that one zooms every axis by one factor
    (isotropic) and samples the low-resolution grid by nearest neighbour, so it makes neither a 1 x 1 x 2 mm
    acquisition nor the averaging over the slice that blurs a thin structure like the hippocampus.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.25, thickness_range: Sequence[float] = (1.3, 2.5)):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.thickness_range = (float(thickness_range[0]), float(thickness_range[1]))
        self._axis, self._thickness, self._phase = 0, 1.0, 0.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._axis = int(self.R.randint(0, 3))
        self._thickness = float(self.R.uniform(*self.thickness_range))
        self._phase = float(self.R.uniform(0.0, self._thickness))

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = thicken_along_axis(torch.as_tensor(d[key]), self._axis, self._thickness, self._phase)
        return d
