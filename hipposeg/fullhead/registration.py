"""Affine registration of a head or brain scan to the ICBM152 2009a template with SimpleITK.

Fixed image: the template (skull-stripped, MNI mm); moving image: the scan. The metric is Mattes mutual
information sampled only inside the template's brain mask, so skull, neck and background of the scan do
not pull the fit and skull-stripped scans work as well as whole heads. Speed comes from working on
coarse copies: the scan is block-averaged once to about 2 mm (``BinShrink``), intensities are clipped to
robust percentiles, and the template's 2 mm copy is cached. Stages:

1. initial translation: the centre of the scan's head (intensity moments of its upper part, so a neck
   in the field of view does not drag it down) onto the centre of the template brain;
2. rigid (Euler) at 6 and 4 mm;
3. affine (12 parameters) at 4 and 2 mm.

The returned transform maps template (MNI) points to scan points; :attr:`RegistrationResult.matrix_ras`
is the same map as a 4x4 matrix from MNI mm to the scan's RAS world mm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from hipposeg.data.readers import Image, image_to_sitk
from hipposeg.fullhead.template import load_template

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (an involution)
WORK_SPACING_MM = 2.0
N_THREADS = 2


@dataclass
class RegistrationResult:
    transform: object  # sitk.AffineTransform, template (LPS) -> scan (LPS) physical points
    matrix_ras: np.ndarray  # 4x4, MNI mm (RAS) -> scan world mm (RAS)
    metric: float  # final Mattes MI (negative; lower is better) at the finest level
    seconds: float
    stages: dict = field(default_factory=dict)

    def map_points(self, points_mni: np.ndarray) -> np.ndarray:
        """(N, 3) MNI mm -> (N, 3) scan RAS mm."""
        points = np.asarray(points_mni, dtype=np.float64)
        return points @ self.matrix_ras[:3, :3].T + self.matrix_ras[:3, 3]


def _sitk():
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(N_THREADS)
    return sitk


def _array_to_sitk(array: np.ndarray, affine_ras: np.ndarray):
    sitk = _sitk()
    out = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    affine_lps = _FLIP @ affine_ras
    spacing = np.sqrt((affine_lps[:3, :3] ** 2).sum(axis=0))
    out.SetSpacing([float(s) for s in spacing])
    out.SetDirection([float(v) for v in (affine_lps[:3, :3] / spacing).ravel()])
    out.SetOrigin([float(v) for v in affine_lps[:3, 3]])
    return out


@lru_cache(maxsize=1)
def template_work_images():
    """The template and its brain mask at :data:`WORK_SPACING_MM` (SimpleITK, float32 / uint8)."""
    sitk = _sitk()
    tpl = load_template()
    fixed = _array_to_sitk(tpl.array.astype(np.float32), tpl.affine)
    mask = _array_to_sitk(tpl.brain_mask.astype(np.uint8), tpl.affine)
    factor = int(round(WORK_SPACING_MM))
    fixed = sitk.BinShrink(fixed, [factor] * 3)
    mask = sitk.BinaryThreshold(sitk.BinShrink(sitk.Cast(mask, sitk.sitkFloat32), [factor] * 3), 0.5, 2.0, 1, 0)
    return fixed, sitk.Cast(mask, sitk.sitkUInt8)


def prepare_moving(image: Image):
    """Block-average the scan to about :data:`WORK_SPACING_MM` and clip its intensities (float32 sitk)."""
    sitk = _sitk()
    moving = image_to_sitk(Image(array=np.asarray(image.array, dtype=np.float32), affine=image.affine))
    factors = [max(1, int(round(WORK_SPACING_MM / s))) for s in moving.GetSpacing()]
    if any(f > 1 for f in factors):
        moving = sitk.BinShrink(moving, factors)
    arr = sitk.GetArrayViewFromImage(moving)
    fg = arr[arr > 0]
    hi = float(np.percentile(fg, 99.5)) if fg.size else float(arr.max())
    clipped = sitk.Clamp(moving, sitk.sitkFloat32, 0.0, hi)
    return clipped


def _head_centre(moving) -> np.ndarray:
    """LPS point near the centre of the brain: the centroid of the head's top 120 mm.

    The centroid of the whole foreground is pulled down by the neck and face when they are in the field
    of view; the brain fills most of the top of the head in every orientation the scan may be stored in.
    """
    sitk = _sitk()
    arr = sitk.GetArrayViewFromImage(moving).transpose(2, 1, 0)  # (i, j, k)
    thr = 0.25 * float(np.percentile(arr[arr > 0], 95)) if (arr > 0).any() else 0.0
    ijk = np.argwhere(arr > thr).astype(np.float64)
    w = arr[arr > thr].astype(np.float64)
    direction = np.asarray(moving.GetDirection()).reshape(3, 3)
    spacing = np.asarray(moving.GetSpacing())
    origin = np.asarray(moving.GetOrigin())
    pts = origin + (ijk * spacing) @ direction.T  # LPS, +z superior
    top = pts[:, 2].max()
    keep = pts[:, 2] >= top - 120.0
    return (pts[keep] * w[keep, None]).sum(axis=0) / w[keep].sum()


def _method(sitk, fixed, mask, transform, shrink, sigmas, iterations, learning_rate, sampling, seed, bins=32):
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    reg.SetMetricFixedMask(mask)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(transform, inPlace=True)
    return reg


@dataclass
class RegistrationSettings:
    rigid_shrink: tuple = (3, 2)
    rigid_sigmas: tuple = (4.0, 2.0)
    rigid_iterations: int = 60
    rigid_step: float = 2.0
    affine_shrink: tuple = (2, 1)
    affine_sigmas: tuple = (2.0, 1.0)
    affine_iterations: int = 60
    affine_step: float = 1.0
    sampling: float = 0.05
    mask_dilate_mm: float = -4.0
    bins: int = 32
    do_affine: bool = True


def register_to_template(image: Image, seed: int = 7, settings: RegistrationSettings | None = None) -> RegistrationResult:
    """Affine transform from the ICBM152 template to ``image`` (any orientation, voxel size, skull or not)."""
    sitk = _sitk()
    t0 = time.perf_counter()
    fixed, mask = template_work_images()
    moving = prepare_moving(image)
    t_prep = time.perf_counter()

    # 1. translation: template brain centre onto the scan's head centre
    tpl = load_template()
    brain_ijk = np.argwhere(tpl.brain_mask).mean(axis=0)
    brain_centre_lps = (_FLIP @ tpl.affine @ np.r_[brain_ijk, 1.0])[:3]
    head_centre_lps = _head_centre(moving)
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter([float(v) for v in brain_centre_lps])
    rigid.SetTranslation([float(v) for v in head_centre_lps - brain_centre_lps])

    # 2. rigid
    cfg = settings or RegistrationSettings()
    if cfg.mask_dilate_mm > 0:
        r = int(round(cfg.mask_dilate_mm / WORK_SPACING_MM))
        mask = sitk.BinaryDilate(mask, [r] * 3)
    elif cfg.mask_dilate_mm < 0:
        r = int(round(-cfg.mask_dilate_mm / WORK_SPACING_MM))
        mask = sitk.BinaryErode(mask, [r] * 3)
    reg = _method(sitk, fixed, mask, rigid, list(cfg.rigid_shrink), list(cfg.rigid_sigmas), cfg.rigid_iterations, cfg.rigid_step, cfg.sampling, seed, cfg.bins)
    reg.Execute(fixed, moving)
    rigid_metric = reg.GetMetricValue()
    t_rigid = time.perf_counter()

    # 3. affine, starting from the rigid fit
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    metric = rigid_metric
    if cfg.do_affine:
        reg = _method(sitk, fixed, mask, affine, list(cfg.affine_shrink), list(cfg.affine_sigmas), cfg.affine_iterations, cfg.affine_step, cfg.sampling, seed, cfg.bins)
        reg.Execute(fixed, moving)
        metric = reg.GetMetricValue()
    t_affine = time.perf_counter()

    m_lps = np.eye(4)
    m_lps[:3, :3] = np.asarray(affine.GetMatrix()).reshape(3, 3)
    centre = np.asarray(affine.GetCenter())
    m_lps[:3, 3] = np.asarray(affine.GetTranslation()) + centre - m_lps[:3, :3] @ centre
    matrix_ras = _FLIP @ m_lps @ _FLIP
    return RegistrationResult(
        transform=affine,
        matrix_ras=matrix_ras,
        metric=float(metric),
        seconds=t_affine - t0,
        stages={
            "prepare_s": t_prep - t0,
            "rigid_s": t_rigid - t_prep,
            "affine_s": t_affine - t_rigid,
            "rigid_metric": float(rigid_metric),
            "affine_metric": float(metric),
            "initial_translation_mm": [float(v) for v in (_FLIP[:3, :3] @ (head_centre_lps - brain_centre_lps))],
        },
    )
