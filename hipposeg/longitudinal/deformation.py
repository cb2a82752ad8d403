"""Volume change by Jacobian integration: a symmetric deformable registration between the time points' crops.

Every time point of a subject has the same two crops of the common (halfway) space (``pipeline.py``); after the
rigid alignment what differs between them inside a crop is the anatomy's change, the scans' noise, blur and contrast.
Change is measured here as tensor-based morphometry does it (Quarc, Holland & Dale 2011; ANTs' longitudinal
Jacobian integration; SIENA's edge-displacement idea in volume form):

    crop a, crop b (one box, same blur: resolution.py)
      --intensity: both on one scale (harmonise), b's histogram matched to a's inside the crop-->
      --FastSymmetricForcesDemons, a fixed, b moving (diffeomorphic-free, smooth field u, 1 mm)--> x -> x + u(x)
      --Jacobian determinant J_ab = det(I + grad u)--> how much each voxel of a grows or shrinks in b
      --integrated over a's soft hippocampus (1 - background probability)--> V_b / V_a = sum(p_a J_ab) / sum(p_a)

and the same with b fixed and a moving. The two estimates are combined as the geometric mean of the forward ratio
and the inverse of the backward one, ``r_ab = (ln R_ab - ln R_ba) / 2`` (log volume ratio b / a), so that
``r_ba = -r_ab`` exactly: with the two scans swapped, (1 + c12)(1 + c21) = 1 by construction. With more than two
time points every pair is measured and the log volumes are their least-squares fit on the complete graph
(:func:`consistent_log_volumes`), which depends on the set of scans only, not on their order or the baseline.

What this does not assume: any parametric form of the change (the field is free, smoothed by a Gaussian of
:data:`FIELD_SIGMA_MM`), nor that the segmentations of two time points agree (the model's probabilities only say
where to integrate; a boundary that the model reads a fraction of a voxel off at one time point moves that
time point's soft volume, not the Jacobian).

Evidence for the settings is in ``bench/longitudinal.py`` (its README block names the method); the soft-volume
change (``pipeline.soft_volumes``) is kept beside it as a cross-check, and a scan whose two measures differ by more
than :data:`hipposeg.qc_flags.METHODS_DISAGREE_ABOVE_PP` is flagged ``longitudinal_methods_disagree_<side>``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

#: Gaussian smoothing (sd, voxels = mm on the 1 mm crops) of the demons displacement field, and its iterations.
#: Measured on the bench's five colin27 pairs (bench/longitudinal.py, noisy regridded copies; mean |error| of the
#: change, percentage points, no-change / atrophy pairs): sd 3 mm 0.28 / 0.80 (the atrophy under-read by 0.77 on
#: average: a smooth field cannot follow a contraction confined to a thin structure), 2.5 mm 0.36 / 0.62, 2 mm
#: 0.46 / 0.46 (bias 0.24), 1.5 mm 0.63 / 0.34 (noise and blur read as change); 30 iterations give the same changes
#: as 60 or 150 within 0.04 in half the time of 60.
#: A later sweep on all 15 pairs of the three heads (2026-12-07, crops of the bench's run replayed offline, mean
#: |error| left / right, no-change pairs then atrophy pairs): sd 2 mm 0.66 / 0.62, 0.45 / 0.55 (this setting);
#: sd 2.5 mm with the blur matched after the common blur 0.42 / 0.35, 0.52 / 0.61 (the atrophy under-read by 0.44 on
#: average); a local 12-parameter affine of the hippocampus region (SimpleITK, mask grown 2-4 mm) before the demons
#: gave the same as the demons alone (its determinant depends on the mask: -4.0 % with the mask grown 2 mm, -2.9 %
#: with 5 mm, on a -4.0 % pair, because the region then holds tissue that does not shrink); no blur matching at all
#: 0.68 / 0.62, 0.44 / 0.59. Noise alone (independent Rician noise of 2 % on both copies of one crop, no move)
#: reads as 0.1-0.35 points, so most of the error comes from the copies' regridding (partial volume on other grids).
FIELD_SIGMA_MM = 2.0
ITERATIONS = 30
#: a common blur of both crops before the registration (after their blur is matched, :func:`match_blur`): the
#: demons forces follow intensity edges, and the edges of a thin grey-matter structure between CSF and white matter
#: move with the blur; on moved, regridded copies of one head (no added noise) a 0.2 mm difference in blur read as
#: 1-2 % of volume without it, 0.1-0.3 % with it (0.5 mm: worse on both kinds of pair on the five colin27 pairs)
COMMON_BLUR_MM = 1.0
#: per-axis blurs tried when matching the sharper crop of a pair to the other (mm)
BLUR_STEPS_MM = tuple(np.round(np.arange(0.0, 1.01, 0.1), 2))
BLUR_MATCH_MARGIN = 4  # voxels at each crop face left out of the blur match
HISTOGRAM_LEVELS, MATCH_POINTS = 128, 15


def _to_sitk(array: np.ndarray):
    import SimpleITK as sitk

    return sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=np.float32).transpose(2, 1, 0)))


def jacobian_ratio(fixed: np.ndarray, moving: np.ndarray, weights: np.ndarray) -> float:
    """``sum(weights * J) / sum(weights)``: the volume, in ``moving``, of the soft region ``weights`` of ``fixed``
    over its volume in ``fixed``; J is the Jacobian determinant of the demons field that maps ``fixed``'s voxels onto
    ``moving`` (crops of one box, 1 mm, already on one intensity scale)."""
    import SimpleITK as sitk

    f, m = _to_sitk(fixed), _to_sitk(moving)
    m = sitk.HistogramMatching(m, f, HISTOGRAM_LEVELS, MATCH_POINTS, True)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(ITERATIONS)
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(FIELD_SIGMA_MM)
    field = demons.Execute(f, m)
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field)).transpose(2, 1, 0)
    w = np.asarray(weights, dtype=np.float64)
    return float((w * jacobian).sum() / w.sum())


def relative_blur(a: np.ndarray, b: np.ndarray, margin: int = BLUR_MATCH_MARGIN) -> tuple[float, float, float]:
    """Per-axis Gaussian sd (mm) that, applied to ``a``, makes it closest to ``b`` (least squares over the crop less
    ``margin`` voxels at each face): the best isotropic one of :data:`BLUR_STEPS_MM`, then each axis in turn."""
    from scipy import ndimage

    inner = tuple(slice(margin, n - margin) for n in a.shape)
    target = b[inner]

    def error(sigma):
        blurred = ndimage.gaussian_filter(a, sigma) if any(sigma) else a
        return float((blurred[inner] - target).var())

    errors = {float(step): error((float(step),) * 3) for step in BLUR_STEPS_MM}
    best_step = min(errors, key=errors.get)
    best_sigma, best = (best_step,) * 3, errors[best_step]
    for axis in range(3):
        for step in BLUR_STEPS_MM:
            sigma = tuple(float(step) if k == axis else best_sigma[k] for k in range(3))
            if sigma == best_sigma:
                continue
            value = error(sigma)
            if value < best:
                best_sigma, best = sigma, value
    return best_sigma


def match_blur(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` each blurred, per axis, towards the other where it is the sharper one, then both by
    :data:`COMMON_BLUR_MM`. Symmetric: ``match_blur(b, a)`` returns the same two arrays swapped."""
    from scipy import ndimage

    sigma_a, sigma_b = relative_blur(a, b), relative_blur(b, a)
    out = []
    for array, sigma in ((a, sigma_a), (b, sigma_b)):
        total = tuple(math.sqrt(s * s + COMMON_BLUR_MM ** 2) for s in sigma)
        out.append(ndimage.gaussian_filter(array, total) if any(total) else array)
    return out[0], out[1]


def pair_log_ratio(crop_a: np.ndarray, crop_b: np.ndarray, weights_a: np.ndarray, weights_b: np.ndarray) -> dict:
    """ln(V_b / V_a) of one side, inverse-consistent: half the forward log ratio (a fixed) minus half the backward
    one (b fixed). Returns it with the two one-way ratios (their disagreement is a registration check)."""
    from hipposeg.longitudinal.resolution import normalised

    a, b = match_blur(normalised(crop_a), normalised(crop_b))
    forward = jacobian_ratio(a, b, weights_a)
    backward = jacobian_ratio(b, a, weights_b)
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
    :func:`jacobian_log_volumes` (the changes). ``crops[i][side]``: the crop the model read (blur equalised);
    ``probabilities[i][side]``: its (3, *crop) probabilities. Returns the volumes and each side's pair records."""
    volumes = [{} for _ in crops]
    records = {}
    for side in sides:
        weights = [1.0 - np.asarray(p[side][0], dtype=np.float64) for p in probabilities]
        logs, records[side] = jacobian_log_volumes([c[side] for c in crops], weights, order)
        level = float(np.mean([math.log(max(soft[i][side], 1e-6)) for i in order]))
        for i in range(len(crops)):
            volumes[i][side] = math.exp(level + logs[i])
    return volumes, records
