"""The MONAI transform chains, in one place.

* :func:`volume_transforms` — load, channel-first, orientation to RAS, resample to a target spacing
  (linear for images, nearest for labels), intensity normalisation. Deterministic: run once and cached.
* :func:`cut_slices` — the non-empty-slice filter: a 3D case becomes 2D (or 2.5D) training samples.
* :func:`volume_training_transforms` — the 3D network's training chain: the volume chain, then 3D flip, rotation,
  scaling, thick-slice simulation (:class:`RandThickSlicesd`), intensity and scanner jitter, pad and crop to a patch.
* :func:`slice_augmentations` — flip, rotation, pad/crop scaling, intensity jitter, and the scanner-robustness
  group (gamma, histogram shift, blur, noise), each a switch with a probability; then padding to a multiple of 32
  for the encoder.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    DivisiblePadd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandFlipd,
    RandSpatialCropd,
    RandZoomd,
    Randomizable,
    RandomizableTransform,
    Spacingd,
    SpatialPadd,
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


def slice_augmentations(
    flip_prob: float = 0.5,
    rotate_prob: float = 0.3,
    rotate_degrees: float = 5.0,
    zoom_prob: float = 0.3,
    zoom_range: Sequence[float] = (0.9, 1.1),
    intensity_prob: float = 0.3,
    noise_prob: float = 0.0,
    divisor: int = ENCODER_DIVISOR,
    *,
    noise_std: float = 0.05,
    gamma_prob: float = 0.0,
    gamma_range: Sequence[float] = (0.7, 1.5),
    histogram_prob: float = 0.0,
    blur_prob: float = 0.0,
    blur_sigma: Sequence[float] = (0.0, 1.0),
) -> Compose:
    """Random 2D augmentation of slice samples, then padding to a multiple of ``divisor``.

    Set a probability to 0 to switch an augmentation off. Zoom keeps the slice size (pad or crop), as in the
    reference notebook's scaling. The scanner-robustness group imitates other scanners and protocols than the
    training crops': ``gamma_prob`` a gamma curve (mean and std kept), ``histogram_prob`` a random monotone
    remapping of intensities, ``blur_prob`` a Gaussian blur with a separate sigma (in voxels) per in-plane axis
    (thick or resampled slices), ``noise_prob`` Gaussian noise of a random std up to ``noise_std``.
    """
    keys = [IMAGE, LABEL]
    chain: list = [EnsureTyped(keys=keys, track_meta=False)]
    if flip_prob > 0:
        chain.append(RandLeftRightFlipd(keys=keys, prob=flip_prob))
    if rotate_prob > 0:
        rad = math.radians(rotate_degrees)
        chain.append(RandRotated(keys=keys, range_x=rad, prob=rotate_prob, keep_size=True,
                                 mode=["bilinear", "nearest"], padding_mode="border"))
    if zoom_prob > 0:
        chain.append(RandZoomd(keys=keys, min_zoom=zoom_range[0], max_zoom=zoom_range[1], prob=zoom_prob,
                               keep_size=True, mode=["bilinear", "nearest"], padding_mode="edge"))
    if blur_prob > 0:
        sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        chain.append(RandGaussianSmoothd(keys=IMAGE, sigma_x=sigma, sigma_y=sigma, prob=blur_prob))
    if gamma_prob > 0:
        chain.append(RandAdjustContrastd(keys=IMAGE, gamma=tuple(gamma_range), retain_stats=True, prob=gamma_prob))
    if histogram_prob > 0:
        chain.append(RandHistogramShiftd(keys=IMAGE, num_control_points=(5, 10), prob=histogram_prob))
    if intensity_prob > 0:
        chain.append(RandScaleIntensityd(keys=IMAGE, factors=0.1, prob=intensity_prob))
        chain.append(RandShiftIntensityd(keys=IMAGE, offsets=0.1, prob=intensity_prob))
    if noise_prob > 0:
        chain.append(RandGaussianNoised(keys=IMAGE, std=noise_std, prob=noise_prob))
    chain.append(DivisiblePadd(keys=keys, k=divisor, mode="edge"))
    chain.append(EnsureTyped(keys=[IMAGE], dtype=torch.float32, track_meta=False))
    chain.append(EnsureTyped(keys=[LABEL], dtype=torch.long, track_meta=False))
    return Compose(chain)


def slice_padding(divisor: int = ENCODER_DIVISOR) -> Compose:
    """No augmentation, only the padding (for evaluation on slices)."""
    return slice_augmentations(0, 0, 0, 0, (1, 1), 0, 0, divisor)  # every switch off


class RandThickSlicesd(RandomizableTransform, MapTransform):
    """Simulate a thick-slice (anisotropic) acquisition of a 1 mm image: along one random axis, average blocks
    of ``thickness`` voxels (a box slice profile, what a thick slice records), the first block starting at a random
    phase, and interpolate back linearly to the original grid (:func:`thicken_along_axis`). Labels are left alone:
    the network learns to draw the 1 mm truth from a thick-slice image.

    ``thickness`` is drawn from ``thickness_range`` (in voxels, e.g. 1.3-2.5 for 1.3-2.5 mm slices of a 1 mm crop).

    Why not MONAI's ``RandSimulateLowResolutiond``: it zooms every axis by one factor (isotropic) and samples the
    low-resolution grid by nearest neighbour, so it makes neither a 1 x 1 x 2 mm acquisition nor the averaging
    over the slice that blurs a thin structure like the hippocampus.
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


def thick_slice_operator(n: int, thickness: float, phase: float = 0.0) -> np.ndarray:
    """The (n, n) matrix that turns a line of ``n`` 1-voxel samples into the same line acquired with slices
    ``thickness`` voxels thick and resampled back to the 1-voxel grid.

    Each 1-voxel sample is the constant value of its voxel (a box), and a thick slice records the mean over its
    extent; thick slice k covers ``[k * thickness - phase, (k + 1) * thickness - phase)`` in voxel-edge
    coordinates (``0 <= phase < thickness``: where the first slice starts before the line), clipped to the line.
    The thick slices are then sampled back at the voxel centres by linear interpolation between their centres
    (constant beyond the first and last centre). Rows sum to 1; ``thickness=1, phase=0`` is the identity.
    """
    if not thickness > 0 or n < 1:
        raise ValueError(f"need n >= 1 and a positive thickness, got n={n}, thickness={thickness}")
    phase = float(phase) % thickness
    edges = np.arange(-phase, n + thickness, thickness)
    edges = np.clip(edges, 0.0, n)
    edges = np.unique(edges)  # the clipped first/last edges may repeat
    # averaging: overlap of thick slice k = [edges[k], edges[k+1]) with voxel i = [i, i + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    voxel = np.arange(n)[None, :]
    overlap = np.clip(np.minimum(hi, voxel + 1) - np.maximum(lo, voxel), 0.0, None)
    average = overlap / overlap.sum(axis=1, keepdims=True)  # (m, n)
    # back to the voxel centres, linearly between the thick slices' centres
    centres = (edges[:-1] + edges[1:]) / 2
    back = np.stack([np.interp(np.arange(n) + 0.5, centres, np.eye(len(centres))[k]) for k in range(len(centres))],
                    axis=1)  # (n, m)
    return back @ average


def thicken_along_axis(image: torch.Tensor, axis: int, thickness: float, phase: float = 0.0) -> torch.Tensor:
    """``image`` (C, X, Y, Z) as if acquired with slices ``thickness`` voxels thick along spatial ``axis`` (the
    first slice starting ``phase`` voxels before the image) and resampled back to its grid
    (:func:`thick_slice_operator`)."""
    x = torch.as_tensor(image)
    n = x.shape[axis + 1]
    op = torch.as_tensor(thick_slice_operator(n, thickness, phase), dtype=torch.float32)
    out = torch.tensordot(x.float().movedim(axis + 1, -1), op.T, dims=1)  # (..., n) @ (n, n)^T
    return out.movedim(-1, axis + 1).to(x.dtype)


def volume_training_transforms(
    pixdim: Sequence[float] | None = (1.0, 1.0, 1.0),
    patch_size: Sequence[int] = (48, 64, 48),
    *,
    flip_prob: float = 0.5,
    rotate_prob: float = 0.3,
    rotate_degrees: float = 15.0,
    zoom_prob: float = 0.3,
    zoom_range: Sequence[float] = (0.85, 1.25),
    thick_slice_prob: float = 0.25,
    thick_slice_range: Sequence[float] = (1.3, 2.5),
    intensity_prob: float = 0.3,
    gamma_prob: float = 0.3,
    noise_prob: float = 0.15,
    noise_std: float = 0.1,
) -> Compose:
    """The 3D network's training chain, flat so that ``CacheDataset`` caches everything up to the first random
    step: :func:`volume_transforms` (load, RAS, resample, z-score), then left-right flip, rotation about each axis,
    scaling, thick-slice simulation, intensity scale/shift, gamma, noise, and padding (zeros = the mean
    intensity) and random cropping to ``patch_size``."""
    keys = [IMAGE, LABEL]
    chain = list(volume_transforms(keys, pixdim).transforms)
    chain.append(EnsureTyped(keys=keys, track_meta=False))
    if flip_prob > 0:
        chain.append(RandFlipd(keys=keys, spatial_axis=0, prob=flip_prob))
    if rotate_prob > 0:
        rad = math.radians(rotate_degrees)
        chain.append(RandRotated(keys=keys, range_x=rad, range_y=rad, range_z=rad, prob=rotate_prob, keep_size=True,
                                 mode=["bilinear", "nearest"], padding_mode="border"))
    if zoom_prob > 0:
        chain.append(RandZoomd(keys=keys, min_zoom=zoom_range[0], max_zoom=zoom_range[1], prob=zoom_prob,
                               keep_size=True, mode=["trilinear", "nearest"], padding_mode="edge"))
    if thick_slice_prob > 0:
        chain.append(RandThickSlicesd(keys=IMAGE, prob=thick_slice_prob, thickness_range=thick_slice_range))
    if intensity_prob > 0:
        chain.append(RandScaleIntensityd(keys=IMAGE, factors=0.1, prob=intensity_prob))
        chain.append(RandShiftIntensityd(keys=IMAGE, offsets=0.1, prob=intensity_prob))
    if gamma_prob > 0:
        chain.append(RandAdjustContrastd(keys=IMAGE, gamma=(0.7, 1.5), retain_stats=True, prob=gamma_prob))
    if noise_prob > 0:
        chain.append(RandGaussianNoised(keys=IMAGE, std=noise_std, prob=noise_prob))
    chain.append(SpatialPadd(keys=keys, spatial_size=list(patch_size)))
    chain.append(RandSpatialCropd(keys=keys, roi_size=list(patch_size), random_size=False))
    chain.append(EnsureTyped(keys=[IMAGE], dtype=torch.float32, track_meta=False))
    chain.append(EnsureTyped(keys=[LABEL], dtype=torch.long, track_meta=False))
    return Compose(chain)
