"""Volume change by Jacobian integration: a symmetric deformable registration between the time points' crops.

Every time point of a subject has the same two crops of the common (halfway) space (``pipeline.py``); after the
rigid alignment what differs between them inside a crop is the anatomy's change, the scans' noise, blur and contrast.
Change is measured here as tensor-based morphometry does it (Quarc, Holland & Dale 2011; ANTs' longitudinal
Jacobian integration; SIENA's edge-displacement idea in volume form):

    crop a, crop b (one box of the common space, as sampled from each raw scan)
      --blur: both by COMMON_BLUR_MM, then the sharper one, per axis, to the other (prepared_pair)-->
      --intensity: each z-scored over the same box (linear: no quantile or histogram mapping)-->
      --FastSymmetricForcesDemons, a fixed, b moving (update and field smoothed, 1 mm)--> x -> x + u(x)
      --Jacobian determinant J_ab = det(I + grad u)--> how much each voxel of a grows or shrinks in b
      --integrated over a's soft hippocampus (1 - background probability)--> V_b / V_a = sum(p_a J_ab) / sum(p_a)

and the same with b fixed and a moving. The two estimates are combined as the geometric mean of the forward ratio
and the inverse of the backward one, ``r_ab = (ln R_ab - ln R_ba) / 2`` (log volume ratio b / a), so that
``r_ba = -r_ab`` exactly: with the two scans swapped, (1 + c12)(1 + c21) = 1 by construction. With more than two
time points every pair is measured and the log volumes are their least-squares fit on the complete graph
(:func:`consistent_log_volumes`), which depends on the set of scans only, not on their order or the baseline.

What this does not assume: any parametric form of the change (the field is free, smoothed by Gaussians of
:data:`FIELD_SIGMA_MM` and :data:`UPDATE_SIGMA_MM`), nor that the segmentations of two time points agree (the
model's probabilities only say where to integrate; a boundary that the model reads a fraction of a voxel off at one
time point moves that time point's soft volume, not the Jacobian).

Evidence for the settings is in ``bench/longitudinal.py`` (its README block names the method); the soft-volume
change (``pipeline.soft_volumes``) is kept beside it as a cross-check, and a scan whose two measures differ by more
than :data:`hipposeg.qc_flags.METHODS_DISAGREE_ABOVE_PP` is flagged ``longitudinal_methods_disagree_<side>``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

#: Demons regularisation (sd, voxels = mm on the 1 mm crops): the displacement field (elastic) and each iteration's
#: update (fluid) are smoothed. Evidence, bench/longitudinal.py's 15 pairs of the three heads (crops of one run
#: replayed offline, 2026-12-07; mean |error| of the change in percentage points, left / right, no-change pairs then
#: atrophy pairs):
#:
#: * before this setting (crops mapped to the Task04 intensity curve, histogram matching, field sd 2 mm, no update
#:   smoothing, blur matched by least squares before the common blur): 0.66 / 0.62, 0.45 / 0.55. Its intensity
#:   mappings are not linear, so they differ between a crop and a blurrier copy of it and move the edges: a crop
#:   against its own regridded copy (no noise, no change) read -0.4 to -2.1 %, a Gaussian-blurred copy (0.7 mm)
#:   -0.6 to -1.5 %; with linear intensities (z-scores) and the blur measured by correlation, -0.3 to +0.3 and 0.0;
#: * linear intensities, blur measured after the common blur, field sd 2 mm: 0.35 / 0.34, 0.69 / 0.63 (no bias on
#:   the no-change pairs, the atrophy under-read by 0.6 on average: a smooth field spreads a contraction confined
#:   to the hippocampus over its neighbours); field sd 2.5 mm: worse on atrophy;
#: * the same with the update smoothed too (fluid) so that the field follows a local contraction (on a crop
#:   contracted by a known -4.05 %: field sd 2 mm reads -3.27, field 1.5 / update 1.5 mm -3.55, update 2 mm alone
#:   -4.00): field 1.5 / update 1.5 mm 0.42 / 0.40, 0.54 / 0.54; update 2 mm alone 0.69 / 0.48, 0.64 / 0.66
#:   (noise followed too); field 2 / update 1 mm 0.35 / 0.32, 0.70 / 0.62;
#: * field 1.5 / update 1.5 mm with the blur measured on the registered pair (:func:`prepared_pair`), both
#:   registrations of 50 iterations: 0.42 / 0.54, 0.38 / 0.44 (bias -0.03 on the no-change pairs, +0.17 on the
#:   atrophy pairs); this setting, the second registration refining the first's field (15 + 25 iterations instead
#:   of 50 + 50): 0.44 / 0.53, 0.40 / 0.42;
#: * tried, not kept: a local 12-parameter affine of the hippocampus region first (its determinant depends on how
#:   much of the neighbourhood the region holds: -4.0 % with the mask grown 2 mm, -2.9 % with 5 mm on a -4.0 % pair),
#:   no blur matching (0.68 / 0.62, 0.44 / 0.59); on this setting (2026-12-07, same replay; no-change then atrophy
#:   pairs, mean |error| left / right; this setting 0.45 / 0.53, 0.40 / 0.43): a common blur of 1.5 mm 0.43 / 0.52,
#:   0.50 / 0.65; the weights smoothed by 1 mm 0.40 / 0.46, 0.45 / 0.42 (atrophy under-read by 0.4 / 0.2); diffeomorphic
#:   demons 0.44 / 0.54, 0.40 / 0.42; 50 refinement iterations 0.45 / 0.54, 0.38 / 0.43; edge-preserving denoising
#:   first (curvature anisotropic diffusion, 5 iterations, then a 0.5 mm blur) 0.32 / 0.58, 0.54 / 0.43, with a 1 mm
#:   blur 0.34 / 0.56, 0.49 / 0.61, a 3x3x3 median 0.45 / 0.72, 0.70 / 0.67 (denoising flattens the change: atrophy
#:   under-read by 0.3-0.7).
#:
#: What is left is scatter, not bias: independent Rician noise alone reads as 0.1-0.35 points; a crop whose noise
#: differs from the other's in kind (white noise on one crop, the other's noise interpolated from its scan) read
#: several points off in a trial, so two scans of very different quality should be looked at (their soft-volume
#: change is the cross-check column).
FIELD_SIGMA_MM = 1.5
UPDATE_SIGMA_MM = 1.5
ITERATIONS = 50  # a registration from the identity
#: the first registration of a pair (for the blur match), and the refinement of its field once the blur is matched
ALIGN_ITERATIONS, REFINE_ITERATIONS = 15, 25
#: a common blur of both crops before the registration: the demons forces follow intensity edges, noise less so
COMMON_BLUR_MM = 1.0
#: per-axis blurs tried when matching the sharper crop of a pair to the other (mm), and the rounds of the
#: axis-by-axis search
BLUR_STEPS_MM = tuple(np.round(np.arange(0.0, 1.201, 0.05), 3))
BLUR_MATCH_ROUNDS = 3
BLUR_MATCH_MARGIN = 4  # voxels at each crop face left out of the blur match and of the intensity scaling


def _to_sitk(array: np.ndarray):
    import SimpleITK as sitk

    return sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=np.float32).transpose(2, 1, 0)))


def _demons_field(fixed: np.ndarray, moving: np.ndarray, iterations: int, initial=None):
    """The demons displacement field (SimpleITK image) that maps ``fixed``'s voxels onto ``moving``, from
    ``initial`` (a field of the same grid) when given."""
    import SimpleITK as sitk

    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(iterations)
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(FIELD_SIGMA_MM)
    demons.SetSmoothUpdateField(True)
    demons.SetUpdateFieldStandardDeviations(UPDATE_SIGMA_MM)
    if initial is None:
        return demons.Execute(_to_sitk(fixed), _to_sitk(moving))
    return demons.Execute(_to_sitk(fixed), _to_sitk(moving), sitk.Image(initial))


def jacobian_ratio(fixed: np.ndarray, moving: np.ndarray, weights: np.ndarray, initial=None) -> float:
    """``sum(weights * J) / sum(weights)``: the volume, in ``moving``, of the soft region ``weights`` of ``fixed``
    over its volume in ``fixed``; J is the Jacobian determinant of the demons field that maps ``fixed``'s voxels onto
    ``moving`` (crops of one box, 1 mm, equally blurred, on one linear intensity scale: :func:`prepared_pair`),
    refined from ``initial`` (:func:`prepared_pair`'s field) when given, else registered from the identity."""
    import SimpleITK as sitk

    field = (_demons_field(fixed, moving, ITERATIONS) if initial is None
             else _demons_field(fixed, moving, REFINE_ITERATIONS, initial))
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field)).transpose(2, 1, 0)
    w = np.asarray(weights, dtype=np.float64)
    return float((w * jacobian).sum() / w.sum())


def _resampled(moving: np.ndarray, fixed: np.ndarray, field) -> np.ndarray:
    """``moving`` resampled onto ``fixed`` through ``field`` (fixed -> moving; linear interpolation)."""
    import SimpleITK as sitk

    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    out = sitk.Resample(_to_sitk(moving), _to_sitk(fixed), transform, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def _inner(shape, margin: int = BLUR_MATCH_MARGIN) -> tuple[slice, ...]:
    return tuple(slice(margin, n - margin) for n in shape)


def _standardised_values(array: np.ndarray) -> np.ndarray:
    values = np.asarray(array, dtype=np.float64).ravel()
    return (values - values.mean()) / max(values.std(), 1e-12)


def relative_blur(a: np.ndarray, b: np.ndarray, margin: int = BLUR_MATCH_MARGIN) -> tuple[float, float, float]:
    """Per-axis Gaussian sd (mm) that, applied to ``a``, makes it most like ``b`` up to a linear change of intensity
    (the highest correlation over the crop less ``margin`` voxels at each face, so neither crop's intensity scale
    matters): the best isotropic one of :data:`BLUR_STEPS_MM`, then each axis in turn, for up to
    :data:`BLUR_MATCH_ROUNDS` rounds."""
    from scipy import ndimage

    inner = _inner(a.shape, margin)
    target = _standardised_values(b[inner])
    errors: dict[tuple, float] = {}

    def error(sigma: tuple) -> float:
        if sigma not in errors:
            blurred = ndimage.gaussian_filter(a, sigma) if any(sigma) else a
            errors[sigma] = 1.0 - float((_standardised_values(blurred[inner]) * target).mean()) ** 2
        return errors[sigma]

    best = min(((float(s),) * 3 for s in BLUR_STEPS_MM), key=error)
    for _ in range(BLUR_MATCH_ROUNDS):
        start = best
        for axis in range(3):
            for step in BLUR_STEPS_MM:
                sigma = tuple(float(step) if k == axis else best[k] for k in range(3))
                if error(sigma) < error(best):
                    best = sigma
        if best == start:
            break
    return best


def standardised(array: np.ndarray, margin: int = BLUR_MATCH_MARGIN) -> np.ndarray:
    """``array`` z-scored by the mean and sd of its crop less ``margin`` voxels at each face: a linear intensity
    scale (a quantile or histogram mapping would differ between a crop and a blurrier copy of it and move edges)."""
    values = np.asarray(array, dtype=np.float64)[_inner(array.shape, margin)]
    return ((np.asarray(array, dtype=np.float64) - values.mean()) / max(values.std(), 1e-12)).astype(np.float32)


def prepared_pair(crop_a: np.ndarray, crop_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, object, object]:
    """Two crops as the registration compares them, and a first field each way (a -> b, b -> a).

    Both crops are blurred by :data:`COMMON_BLUR_MM` and z-scored (:func:`standardised`), registered each way
    (:data:`ALIGN_ITERATIONS`), and each is then blurred, per axis, towards the other crop registered onto it where
    it is the sharper one (:func:`relative_blur`), and z-scored again. The blur is measured on the registered pair
    because on unregistered crops a change of shape reads as blur too (a crop scaled by 1 % matched best with
    0.35-0.4 mm more blur), and after the common blur, where noise weighs less. Symmetric:
    ``prepared_pair(b, a)`` returns the same crops and fields swapped."""
    from scipy import ndimage

    a = ndimage.gaussian_filter(np.asarray(crop_a, dtype=np.float32), COMMON_BLUR_MM)
    b = ndimage.gaussian_filter(np.asarray(crop_b, dtype=np.float32), COMMON_BLUR_MM)
    za, zb = standardised(a), standardised(b)
    field_ab, field_ba = _demons_field(za, zb, ALIGN_ITERATIONS), _demons_field(zb, za, ALIGN_ITERATIONS)
    sigma_a = relative_blur(za, _resampled(zb, za, field_ab))
    sigma_b = relative_blur(zb, _resampled(za, zb, field_ba))
    a = ndimage.gaussian_filter(a, sigma_a) if any(sigma_a) else a
    b = ndimage.gaussian_filter(b, sigma_b) if any(sigma_b) else b
    return standardised(a), standardised(b), field_ab, field_ba


def pair_log_ratio(crop_a: np.ndarray, crop_b: np.ndarray, weights_a: np.ndarray, weights_b: np.ndarray) -> dict:
    """ln(V_b / V_a) of one side, inverse-consistent: half the forward log ratio (a fixed) minus half the backward
    one (b fixed). Returns it with the two one-way ratios (their disagreement is a registration check)."""
    a, b, field_ab, field_ba = prepared_pair(crop_a, crop_b)
    forward = jacobian_ratio(a, b, weights_a, initial=field_ab)
    backward = jacobian_ratio(b, a, weights_b, initial=field_ba)
    return {"log_ratio": 0.5 * (math.log(forward) - math.log(backward)), "forward": forward, "backward": backward}


def consistent_log_volumes(n: int, log_ratio) -> np.ndarray:
    """Log volumes (mean 0) of ``n`` time points from every pair's ``log_ratio(i, j)`` = ln(V_j / V_i), i < j: the
    least-squares solution on the complete graph, v_j = mean_i ln(V_j / V_i) (with ln(V_j / V_j) = 0)."""
    r = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):
        r[i, j] = log_ratio(i, j)
        r[j, i] = -r[i, j]
    return r.mean(axis=0)


def jacobian_log_volumes(crops: list[np.ndarray], weights: list[np.ndarray], order: list[int]) -> tuple[np.ndarray,
                                                                                                          list[dict]]:
    """Per time point, its log volume (mean 0 over the time points) of one side; ``order`` is the canonical order
    of the scans (by content), in which every pair is registered, so that the answer is the same for any input
    order. Returns the log volumes (input order) and each pair's record."""
    pairs = []

    def log_ratio(i, j):
        a, b = order[i], order[j]
        record = pair_log_ratio(crops[a], crops[b], weights[a], weights[b])
        pairs.append({"scans": [a, b], **record})
        return record["log_ratio"]

    canonical = consistent_log_volumes(len(crops), log_ratio)
    out = np.zeros(len(crops))
    for k, i in enumerate(order):
        out[i] = canonical[k]
    return out, pairs


def jacobian_volumes(crops: list[dict], probabilities: list[dict], soft: list[dict], order: list[int],
                     sides=("left", "right")) -> tuple[list[dict], dict]:
    """Per scan and side, a volume (mm3) whose ratios between scans are the Jacobian-integrated changes: the
    geometric mean of the scans' soft volumes ``soft`` (the level) times exp(log volume) of
    :func:`jacobian_log_volumes` (the changes). ``crops[i][side]``: the crop as sampled from its scan (before the
    model's blur equalising); ``probabilities[i][side]``: its (3, *crop) probabilities. Returns the volumes and each
    side's pair records."""
    volumes = [{} for _ in crops]
    records = {}
    for side in sides:
        weights = [1.0 - np.asarray(p[side][0], dtype=np.float64) for p in probabilities]
        logs, records[side] = jacobian_log_volumes([c[side] for c in crops], weights, order)
        level = float(np.mean([math.log(max(soft[i][side], 1e-6)) for i in order]))
        for i in range(len(crops)):
            volumes[i][side] = math.exp(level + logs[i])
    return volumes, records
