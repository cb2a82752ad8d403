"""Simulated hippocampal atrophy with a known answer (``bench/longitudinal.py``, tests).

:func:`simulate_atrophy` contracts each hippocampus of a labelled head smoothly towards its centroid: a displacement
field ``u(y) = s * w(y) * (y - c)`` (SimpleITK ``DisplacementFieldTransform``; the image at ``y`` is read at
``y + u(y)``, so ``s > 0`` shrinks), where ``c`` is the side's label centroid and ``w`` is 1 over the hippocampus
and 3 mm around it and falls smoothly to 0 over the next few millimetres (the label grown by 3 mm, Gaussian with
sigma 2 mm, clipped at 1): inside, the contraction is a uniform scaling, so any mask that lies in the hippocampus
region, not only the label, shrinks by the same fraction. The strength ``s`` per side is solved (secant steps) so
that the warped label's volume changes by the asked fraction; that volume is measured by resampling the label's
indicator linearly onto a 0.5 mm grid of the side's box, before and after the warp, so both are counted the same
way. The true change returned is that measurement, not the asked value.

:func:`add_scanner_noise` gives a simulated scan its own acquisition noise (Rician, as magnitude MR images have):
copies of one head made by warping and resampling share the original's noise pattern, which a registration between
them could lock onto; real sessions have independent noise. The bench adds it to every simulated scan after its
regridding (the noise of a scan lives on its own grid).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hipposeg.data.readers import Image, image_to_sitk

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
SIDE_LABELS = {"left": 1, "right": 2}  # the fullhead test data's hippocampus_lr
PLATEAU_MM, TAPER_SIGMA_MM, MARGIN_MM, FINE_MM = 3.0, 2.0, 12.0, 0.5
#: noise standard deviation as a fraction of the head's 99th intensity percentile (about the white matter's
#: brightness): 0.02 is a white-matter SNR near 40, that of a good 1 mm MPRAGE
NOISE_FRACTION = 0.02


def add_scanner_noise(image: Image, rng: np.random.Generator, fraction: float = NOISE_FRACTION) -> Image:
    """``image`` with Rician noise: |image + n1 + i n2|, n1, n2 Gaussian of sd ``fraction`` x the 99th percentile of
    its voxels above 10 % of that percentile (the head, not the air)."""
    array = np.asarray(image.array, dtype=np.float32)
    p99 = float(np.percentile(array, 99))
    p99 = float(np.percentile(array[array > 0.1 * p99], 99)) if p99 > 0 else 1.0
    sd = fraction * p99
    n1 = rng.normal(0.0, sd, size=array.shape).astype(np.float32)
    n2 = rng.normal(0.0, sd, size=array.shape).astype(np.float32)
    noisy = np.sqrt((array + n1) ** 2 + n2 ** 2)
    return Image(noisy.astype(np.float32), image.affine, path=f"{image.path}#noise" if image.path else None,
                 source=image.source, meta=dict(image.meta))


def _box(truth: Image, value: int, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """World (RAS) corners lo, hi of the axis-aligned box around label ``value`` grown by ``margin_mm``."""
    ijk = np.argwhere(np.asarray(truth.array) == value)
    world = ijk @ truth.affine[:3, :3].T + truth.affine[:3, 3]
    return world.min(axis=0) - margin_mm, world.max(axis=0) + margin_mm


def _grid(lo: np.ndarray, hi: np.ndarray, mm: float) -> Image:
    shape = np.ceil((hi - lo) / mm).astype(int) + 1
    affine = np.diag([mm, mm, mm, 1.0])
    affine[:3, 3] = lo
    return Image(np.zeros(tuple(shape), dtype=np.float32), affine)


def _weights_and_field(truth: Image, value: int, grid: Image, strength: float):
    """Displacement (RAS mm, shape (*grid, 3)) of one side on ``grid``."""
    import SimpleITK as sitk

    label = image_to_sitk(Image((np.asarray(truth.array) == value).astype(np.float32), truth.affine))
    on_grid = sitk.Resample(label, image_to_sitk(grid), sitk.Transform(), sitk.sitkLinear, 0.0)
    inside = sitk.GetArrayFromImage(on_grid).transpose(2, 1, 0) >= 0.5
    mm = float(grid.spacing[0])
    dist = ndimage.distance_transform_edt(~inside, sampling=mm)
    plateau = (dist <= PLATEAU_MM).astype(np.float32)
    w = np.clip(ndimage.gaussian_filter(plateau, TAPER_SIGMA_MM / mm) * 2.0, 0.0, 1.0)
    w[dist <= PLATEAU_MM] = 1.0
    ijk = np.indices(grid.shape, dtype=np.float64).reshape(3, -1).T
    world = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    centre = world[inside.reshape(-1)].mean(axis=0)
    return (strength * w.reshape(-1, 1) * (world - centre)).reshape(*grid.shape, 3)


def _transform(truth: Image, strengths: dict):
    """One SimpleITK displacement-field transform (LPS) for both sides, on a 1 mm grid covering both."""
    import SimpleITK as sitk

    boxes = [_box(truth, SIDE_LABELS[s], MARGIN_MM) for s in strengths]
    lo, hi = np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)
    grid = _grid(lo, hi, 1.0)
    field = np.zeros((*grid.shape, 3))
    for side, strength in strengths.items():
        field += _weights_and_field(truth, SIDE_LABELS[side], grid, strength)
    field_lps = field * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS vectors
    image = sitk.GetImageFromArray(np.ascontiguousarray(field_lps.transpose(2, 1, 0, 3)), isVector=True)
    ref = image_to_sitk(grid)
    image.SetSpacing(ref.GetSpacing())
    image.SetOrigin(ref.GetOrigin())
    image.SetDirection(ref.GetDirection())
    return sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))


def label_volume_mm3(truth: Image, side: str, transform=None) -> float:
    """Volume of ``side``'s label (after ``transform`` when given), from its indicator resampled linearly onto a
    0.5 mm grid of the side's box."""
    import SimpleITK as sitk

    value = SIDE_LABELS[side]
    lo, hi = _box(truth, value, MARGIN_MM)
    fine = _grid(lo, hi, FINE_MM)
    label = image_to_sitk(Image((np.asarray(truth.array) == value).astype(np.float32), truth.affine))
    out = sitk.Resample(label, image_to_sitk(fine), transform or sitk.Transform(), sitk.sitkLinear, 0.0)
    return float(sitk.GetArrayViewFromImage(out).sum()) * FINE_MM ** 3


def simulate_atrophy(image: Image, truth: Image, change: dict[str, float], tolerance: float = 2e-4
                     ) -> tuple[Image, Image, dict]:
    """``image`` and ``truth`` with each hippocampus contracted by ``change[side]`` (a fraction, e.g. -0.02); the
    image linearly, the labels by nearest neighbour. Returns them and ``{"true_change": {side: fraction}, ...}``."""
    import SimpleITK as sitk

    before = {side: label_volume_mm3(truth, side) for side in change}
    strengths = {}
    for side, target in change.items():
        s0, s1 = 0.0, -target / 3.0  # a uniform scaling by (1 - s) per axis changes the volume by about -3 s
        f0, f1 = 0.0, None
        for _ in range(8):
            f1 = label_volume_mm3(truth, side, _transform(truth, {side: s1})) / before[side] - 1.0 - target
            if abs(f1) < tolerance or f1 == f0:
                break
            s0, s1, f0 = s1, s1 - f1 * (s1 - s0) / (f1 - f0), f1
        strengths[side] = s1
    transform = _transform(truth, strengths)
    true_change = {side: label_volume_mm3(truth, side, transform) / before[side] - 1.0 for side in change}
    warped = sitk.Resample(image_to_sitk(Image(np.asarray(image.array, dtype=np.float32), image.affine)), transform,
                           sitk.sitkLinear, 0.0)
    warped_truth = sitk.Resample(image_to_sitk(Image(np.asarray(truth.array, dtype=np.uint8), truth.affine)), transform,
                                 sitk.sitkNearestNeighbor, 0)
    def array(img):
        return np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0))

    info = {"asked_change": dict(change), "true_change": true_change, "strength": strengths}
    return (Image(array(warped), image.affine, path=f"{image.path}#atrophy", source=image.source),
            Image(array(warped_truth), truth.affine, path=f"{truth.path}#atrophy", source=truth.source), info)
