"""Within-subject alignment: every scan of one subject rigidly into one halfway ("median") space, no scan privileged.

Flow of :func:`align_scans`::

    scans + their template registrations (MNI -> scan, affine; hipposeg.fullhead.registration)
      --rigid_register, both directions per pair--> F_ab (scan a -> scan b) and F_ba
      --symmetrise: S_ab = exp((log F_ab + log F_ba^-1) / 2)--> inverse-consistent pair (S_ba = S_ab^-1 exactly)
      --group mean of the scans' frames (bi-invariant barycentre)--> K_i: common space -> scan i (rigid)
      --barycentre of K_i^-1 A_i--> one MNI -> common-space affine (the crops are defined once, from it)

Why this is order-independent
    The pairwise registrations run with the reference scan as fixed and as moving image, and the average of the
    two estimates in the Lie algebra is exactly inverse-consistent. The common space is the barycentre of the
    scans' frames: with two scans it is the halfway space (each scan moved half way towards the other), whatever
    scan comes first. With more scans every scan is registered to one reference; that reference is the scan whose
    content hash is lowest (not the first given, not the baseline), and every mean is computed in that same
    content order, so the inputs in any order, with any baseline, give bit-identical geometry.

Rigid registration (:func:`rigid_register`)
    SimpleITK, Mattes mutual information (32 bins; robust to another scanner's intensity scale), the fixed scan's
    brain (the template's brain mask mapped through its registration, grown by :data:`MASK_GROW_MM`: the neck and
    jaw move between sessions, the brain does not), Euler 3D transform started from the two template
    registrations (so a head turned by 20 degrees between sessions starts near its optimum), regular-step gradient
    descent with physical-shift scales at 4 then 2 mm (the scan pyramids of :func:`hipposeg.fullhead.registration.
    prepare_moving`), fixed sampling seed. Measured on moved, regridded copies of colin27 and CANDI 030 (true
    motion known): each direction within 0.03-0.14 mm of the truth over a 160 mm cube; plain gradient descent with
    a learning rate estimated once (what the template registration uses) stopped 0.4-20 mm away in 3 of 4 runs.

Failure checks (:data:`ALIGNMENT_FLAGS`, codes and thresholds in :mod:`hipposeg.qc_flags`)
    ``alignment_inconsistent``: F_ab and F_ba should be inverses; the largest distance by which F_ba F_ab moves a
    point of a 160 mm cube around the brain above :data:`INCONSISTENCY_FLAG_ABOVE_MM` means at least one of the two
    registrations stopped away from the optimum. ``alignment_poor_fit``: the mutual information after alignment is
    worse (higher) than :data:`ALIGNMENT_METRIC_FLAG_ABOVE`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import expm, logm

from hipposeg.data.readers import Image
from hipposeg.qc_flags import ALIGNMENT_INCONSISTENCY_ABOVE_MM, ALIGNMENT_METRIC_ABOVE

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS
LEVELS = ((4, 1.0, 200), (2, 0.3, 200))  # (mm, sampling fraction, most iterations)
STEP_MM = 2.0  # first step of the optimiser (halved at each finer level)
MASK_GROW_MM = 8.0
#: the thresholds of the two flags live in the one QC flag table (hipposeg.qc_flags), with their meaning
INCONSISTENCY_FLAG_ABOVE_MM = ALIGNMENT_INCONSISTENCY_ABOVE_MM
ALIGNMENT_METRIC_FLAG_ABOVE = ALIGNMENT_METRIC_ABOVE
ALIGNMENT_FLAGS = ("alignment_inconsistent", "alignment_poor_fit")  # codes of hipposeg.qc_flags.QC_FLAGS


@dataclass
class Alignment:
    """Where every scan sits in the common space. ``to_scan[i]``: common-space RAS mm -> scan ``i`` RAS mm (rigid);
    ``mni_to_common``: MNI mm -> common space (affine); ``pairs``: per registered pair its consistency and metric;
    ``flags[i]``: :data:`ALIGNMENT_FLAGS` codes of scan ``i``; ``order``: the scans' canonical order (by content),
    in which every later step that pairs or averages scans works."""

    to_scan: list[np.ndarray]
    mni_to_common: np.ndarray
    reference: int
    pairs: list[dict] = field(default_factory=list)
    flags: list[list[str]] = field(default_factory=list)
    order: list[int] = field(default_factory=list)

    def mni_to_scan(self, i: int) -> np.ndarray:
        """MNI mm -> scan ``i`` RAS mm through the common space: the crops of every scan are one box in it."""
        return self.to_scan[i] @ self.mni_to_common


# --------------------------------------------------------------------------------------------- matrix means


def _real_logm(matrix: np.ndarray) -> np.ndarray:
    out = logm(matrix)
    return np.real(out)


def barycentre(matrices: list[np.ndarray], iterations: int = 30) -> np.ndarray:
    """The group mean of 4x4 transforms (rigid or affine, positive determinant): G with sum log(G^-1 M_i) = 0.

    Invariant to left and right composition (Arsigny & Pennec's bi-invariant mean), so it does not depend on the
    coordinate frame the matrices are written in; for two matrices it is the halfway transform."""
    mean = np.asarray(matrices[0], dtype=np.float64)
    for _ in range(iterations):
        inv = np.linalg.inv(mean)
        step = sum(_real_logm(inv @ m) for m in matrices) / len(matrices)
        mean = mean @ expm(step)
        if np.abs(step).max() < 1e-12:
            break
    mean[3] = (0.0, 0.0, 0.0, 1.0)
    return mean


def symmetrise(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """The inverse-consistent estimate of a map a -> b from ``forward`` (a -> b) and ``backward`` (b -> a)."""
    out = expm((_real_logm(forward) + _real_logm(np.linalg.inv(backward))) / 2.0)
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


def nearest_rigid(matrix: np.ndarray, centre=None) -> np.ndarray:
    """The rigid transform nearest to an affine one: the rotation of its linear part's polar decomposition, and the
    translation that maps ``centre`` (default: the origin) where ``matrix`` maps it."""
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        u[:, -1] *= -1
        rot = u @ vt
    centre = np.zeros(3) if centre is None else np.asarray(centre, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = matrix[:3, :3] @ centre + matrix[:3, 3] - rot @ centre
    return out


def content_key(image: Image) -> str:
    """A hash of an image's voxels and geometry: the canonical order of a subject's scans."""
    digest = hashlib.sha256(np.ascontiguousarray(image.array).tobytes())
    digest.update(np.asarray(image.affine, dtype=np.float64).tobytes())
    return digest.hexdigest()


def max_displacement_mm(matrix: np.ndarray, centre: np.ndarray, half_mm: float = 80.0) -> float:
    """The largest distance a point of the cube of half edge ``half_mm`` around ``centre`` moves under ``matrix``."""
    corners = np.array(np.meshgrid(*[[-half_mm, half_mm]] * 3, indexing="ij")).reshape(3, -1).T + centre
    moved = corners @ matrix[:3, :3].T + matrix[:3, 3]
    return float(np.linalg.norm(moved - corners, axis=1).max())


# --------------------------------------------------------------------------------------------- registration


def _sitk():
    from hipposeg.fullhead.registration import _sitk as configured  # the thread budget hipposeg uses

    return configured()


def brain_mask_pyramid(image: Image, mni_to_scan: np.ndarray, pyramid: dict) -> dict:
    """{mm: uint8 mask} on the scan pyramid: the template's brain mask mapped into the scan, grown by
    :data:`MASK_GROW_MM`."""
    from hipposeg.data.readers import image_to_sitk
    from hipposeg.fullhead.template import load_template

    sitk = _sitk()
    tpl = load_template()
    mask = image_to_sitk(Image(tpl.brain_mask.astype(np.uint8), tpl.affine))
    scan_to_mni = _FLIP @ np.linalg.inv(mni_to_scan) @ _FLIP  # scan LPS point -> template LPS point
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in scan_to_mni[:3, :3].ravel()])
    transform.SetTranslation([float(v) for v in scan_to_mni[:3, 3]])
    out = {}
    for mm, level in pyramid.items():
        mapped = sitk.Resample(mask, level, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        radius = [max(1, int(round(MASK_GROW_MM / s))) for s in level.GetSpacing()]
        out[mm] = sitk.BinaryDilate(mapped, radius)
    return out


def rigid_register(fixed: dict, fixed_mask: dict, moving: dict, initial: np.ndarray, *, centre=None,
                   seed: int = 11) -> tuple[np.ndarray, float]:
    """Rigid map of fixed-scan RAS points to moving-scan RAS points (4x4) and the final Mattes MI.

    ``fixed``/``moving``: scan pyramids ({mm: SimpleITK image}); ``fixed_mask``: the metric mask on the fixed
    pyramid; ``initial``: a 4x4 RAS start (e.g. from the template registrations)."""
    sitk = _sitk()
    start = _FLIP @ nearest_rigid(initial) @ _FLIP  # LPS
    transform = sitk.Euler3DTransform()
    centre = _mask_centre(fixed_mask[max(fixed_mask)])
    transform.SetCenter([float(v) for v in centre])
    transform.SetMatrix([float(v) for v in start[:3, :3].ravel()])
    transform.SetTranslation([float(v) for v in start[:3, :3] @ centre + start[:3, 3] - centre])
    metric = float("nan")
    for level, (mm, sampling, iterations) in enumerate(LEVELS):
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricFixedMask(fixed_mask[mm])
        if sampling < 1.0:
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(sampling, seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=STEP_MM / 2 ** level, minStep=1e-3,
                                                     numberOfIterations=iterations, relaxationFactor=0.5,
                                                     gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(transform, inPlace=True)
        reg.Execute(fixed[mm], moving[mm])
        metric = float(reg.GetMetricValue())
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(transform.GetMatrix()).reshape(3, 3)
    c = np.asarray(transform.GetCenter())
    lps[:3, 3] = np.asarray(transform.GetTranslation()) + c - lps[:3, :3] @ c
    return _FLIP @ lps @ _FLIP, metric


def _mask_centre(mask) -> np.ndarray:
    """LPS centre of a SimpleITK mask's voxels."""
    sitk = _sitk()
    arr = sitk.GetArrayViewFromImage(mask)
    kji = np.argwhere(arr > 0).mean(axis=0) if arr.any() else (np.asarray(arr.shape) - 1) / 2.0
    return np.asarray(mask.TransformContinuousIndexToPhysicalPoint([float(v) for v in kji[::-1]]))


def _brain_centre_ras(mni_to_scan: np.ndarray) -> np.ndarray:
    from hipposeg.fullhead.registration import template_brain_centre_lps

    centre_mni = (_FLIP @ np.r_[template_brain_centre_lps(), 1.0])[:3]
    return mni_to_scan[:3, :3] @ centre_mni + mni_to_scan[:3, 3]


def align_scans(images: list[Image], mni_to_scan: list[np.ndarray], pyramids: list[dict] | None = None) -> Alignment:
    """Rigid, inverse-consistent alignment of one subject's scans into their halfway space (see the module text).

    ``mni_to_scan[i]``: the template registration of scan ``i`` (4x4 RAS, e.g. ``RegistrationResult.matrix_ras``);
    ``pyramids[i]``: its :func:`~hipposeg.fullhead.registration.prepare_moving` pyramid when already built (e.g.
    ``RegistrationResult.pyramid``), else it is built here.
    """
    from hipposeg.fullhead.registration import prepare_moving

    if len(images) < 2:
        raise ValueError("a longitudinal alignment needs two or more scans")
    order = sorted(range(len(images)), key=lambda i: content_key(images[i]))  # canonical: by content, not by input
    ref = order[0]
    given = pyramids or [None] * len(images)
    pyramids = {i: {mm: img for mm, img in (given[i] or prepare_moving(images[i])).items() if mm in (2, 4)}
                for i in order}
    masks = {i: brain_mask_pyramid(images[i], mni_to_scan[i], pyramids[i]) for i in order}

    to_ref = {ref: np.eye(4)}  # scan i -> reference scan (RAS)
    pairs = []
    flags: dict[int, list[str]] = {i: [] for i in order}
    for i in order[1:]:
        # initial guesses from the template registrations: ref -> MNI -> i
        guess = mni_to_scan[i] @ np.linalg.inv(mni_to_scan[ref])
        centre = _brain_centre_ras(mni_to_scan[ref])
        ref_to_i, metric_ref = rigid_register(pyramids[ref], masks[ref], pyramids[i], guess, centre=centre)
        i_to_ref, metric_i = rigid_register(pyramids[i], masks[i], pyramids[ref], np.linalg.inv(guess),
                                            centre=_brain_centre_ras(mni_to_scan[i]))
        inconsistency = max_displacement_mm(i_to_ref @ ref_to_i, centre)
        to_ref[i] = symmetrise(i_to_ref, ref_to_i)
        metric = max(metric_ref, metric_i)
        pair_flags = []
        if inconsistency > INCONSISTENCY_FLAG_ABOVE_MM:
            pair_flags.append("alignment_inconsistent")
        if metric > ALIGNMENT_METRIC_FLAG_ABOVE:
            pair_flags.append("alignment_poor_fit")
        for k in (i, ref):
            flags[k] += [f for f in pair_flags if f not in flags[k]]
        pairs.append({"scans": [ref, i], "inconsistency_mm": inconsistency, "metric": metric, "flags": pair_flags})

    # the common space: barycentre of the scans' frames, written in the reference's frame
    mean = barycentre([to_ref[i] for i in order])  # common -> reference
    to_scan = {i: np.linalg.inv(to_ref[i]) @ mean for i in order}  # common -> scan i
    for i in order:
        to_scan[i] = nearest_rigid(to_scan[i])  # numerical rigidity (the means of rigid maps are rigid)
    mni_to_common = barycentre([np.linalg.inv(to_scan[i]) @ mni_to_scan[i] for i in order])
    n = len(images)
    return Alignment(to_scan=[to_scan[i] for i in range(n)], mni_to_common=mni_to_common, reference=ref,
                     pairs=pairs, flags=[flags[i] for i in range(n)], order=list(order))
