"""Volumetric metrics on label maps: Dice, 95% Hausdorff distance (mm), volumes (mm³).

One definition of each, used by every door (``hipposeg evaluate``, the bundle's evaluator, the whole-head
benchmark, training's validation Dice):

* :func:`dice` - plain numpy, equal to MONAI's ``compute_dice(..., ignore_empty=False)`` (pinned by
  ``tests/test_metrics.py``): 1.0 when both masks are empty, 0.0 when exactly one is.
* :func:`hausdorff95` - MONAI's ``compute_hausdorff_distance`` (symmetric, 95th percentile, in mm through the
  voxel spacing), with one convention for empty masks: ``nan`` when either mask is empty (undefined; the
  summaries count it in ``n_nan``).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks (nonzero = foreground): 2|P∩T| / (|P| + |T|); 1.0 when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    denom = int(pred.sum()) + int(truth.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / denom


def hausdorff95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the surfaces of two masks, in mm.

    MONAI's ``compute_hausdorff_distance(percentile=95, spacing=spacing)``: surface voxels are those a
    6-connected erosion removes, and the result is the larger of the two directed 95th percentiles of
    surface-to-surface distances. ``spacing`` is the voxel size along the array axes. ``nan`` when either
    mask is empty (no surface to measure from); 0.0 when the masks are identical.
    """
    from monai.metrics import compute_hausdorff_distance

    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {truth.shape}")
    if not pred.any() or not truth.any():
        return float("nan")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not have one value per axis of shape {pred.shape}")
    with warnings.catch_warnings():  # MONAI 1.5+ passes its own deprecated argument internally
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd = compute_hausdorff_distance(pred[None, None], truth[None, None], include_background=True,
                                        percentile=95, spacing=spacing)
    return float(hd.item())


def volume_mm3(mask: np.ndarray, voxel_volume: float) -> float:
    """Volume of the nonzero voxels of ``mask`` in mm³, given the volume of one voxel."""
    return float(np.count_nonzero(mask) * voxel_volume)


def case_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], label_names: dict[int, str]) -> dict:
    """Dice and HD95 for the whole structure (label > 0) and each label; predicted and true volumes."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {truth.shape}")
    voxel = float(np.prod(spacing))
    row = {"dice_whole": dice(pred > 0, truth > 0)}
    for value, name in label_names.items():
        if value:
            row[f"dice_{name}"] = dice(pred == value, truth == value)
    row["hd95_whole_mm"] = hausdorff95(pred > 0, truth > 0, spacing)
    row["volume_pred_mm3"] = volume_mm3(pred > 0, voxel)
    row["volume_true_mm3"] = volume_mm3(truth > 0, voxel)
    for value, name in label_names.items():
        if value:
            row[f"volume_pred_{name}_mm3"] = volume_mm3(pred == value, voxel)
            row[f"volume_true_{name}_mm3"] = volume_mm3(truth == value, voxel)
    row["abs_volume_error_mm3"] = abs(row["volume_pred_mm3"] - row["volume_true_mm3"])
    return row


def notebook_slice_dice(pred: np.ndarray, truth: np.ndarray, axis: int = 2, batch: int = 32) -> list[float]:
    """The reference notebook's "slice Dice" terms for one case: whole-hippocampus Dice of each batch of
    ``batch`` consecutive non-empty slices along ``axis``. Average the terms of all cases to compare with the
    notebook's published 0.839 (it is not a volumetric Dice)."""
    keep = np.flatnonzero((np.asarray(truth) > 0).any(axis=tuple(a for a in range(3) if a != axis)))
    p, t = np.moveaxis(np.asarray(pred) > 0, axis, 0)[keep], np.moveaxis(np.asarray(truth) > 0, axis, 0)[keep]
    return [dice(p[i:i + batch], t[i:i + batch]) for i in range(0, len(keep), batch)]


def summarise(rows: list[dict]) -> dict:
    """Mean and median of every numeric column over cases (NaNs ignored, and counted)."""
    summary = {"n_cases": len(rows)}
    if not rows:
        return summary
    for key in rows[0]:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        if len(values) != len(rows):
            continue
        arr = np.asarray(values, dtype=float)
        finite = arr[np.isfinite(arr)]
        summary[key] = {"mean": float(finite.mean()) if finite.size else float("nan"),
                        "median": float(np.median(finite)) if finite.size else float("nan"),
                        "n_nan": int((~np.isfinite(arr)).sum())}
    return summary
