"""How sure a segmentation is: per-case confidence features and the Dice they predict.

Everything comes from what inference already computes (no extra network pass): the class probabilities of the
three slicing axes of the 2.5D core, of the core (their mean) and of the 3D partner, and their average, all on the
preprocessed 1 mm grid (:meth:`hipposeg.ensemble.EnsembleInferer.parts`).

:func:`confidence_features` turns them into :data:`FEATURES`:

* ``partner_dice`` - Dice of the core's and the partner's hippocampus masks (argmax not background): the pairwise
  Dice of ensemble members, the strongest simple failure detector of Zenk et al. (MedIA 2025); NaN without a
  partner;
* ``axis_dice`` - mean pairwise Dice of the masks of the three slicing axes;
* ``entropy`` - mean binary entropy (bits) of the averaged hippocampus probability over the voxels where it exceeds
  :data:`REGION_PROBABILITY` (the mask and its uncertain rim);
* ``soft_dice`` - Dice of the averaged probability with its own mask (how crisp the mask's edge is).

:func:`predicted_dice` maps them to a Dice through a small linear model stored in
``resources/confidence_model.json``. The file holds one mapping per feature set (``{"description": ...,
"models": [...]}``), each fitted by ``bench/robustness.py --fit`` on a run of its own and carrying its own
``low_confidence_below`` threshold and the record of on which data and how it was fitted and scored: the first
mapping whose features a result has, all finite, predicts it (:func:`select_model`; the richer sets come first: with
the 3D partner, the one that uses ``partner_dice``; the core alone, one without it). The ``low_confidence`` flag of
:mod:`hipposeg.qc_flags` fires below the threshold of the mapping that made the prediction, which
:func:`confidence_prediction` hands on beside it (``"low_confidence_below"``; :func:`hipposeg.segment.confidence_qc`
applies it).
:func:`uncertainty_map` is the per-voxel map (entropy of the averaged class probabilities, bits) that
``--save-uncertainty`` writes (``hipposeg bids`` with the sidecar of :func:`uncertainty_sidecar`) and the QC
picture shades above :data:`UNCERTAIN_ABOVE_BITS`.
:func:`row_predicted_dice` reads the predicted Dice back from a volume row (the QC title, the group report).

:func:`load_models` is the one reader of the stored mappings; numpy is imported inside the functions that compute,
so that importing this module (as ``hipposeg segment --help`` does, for :data:`UNCERTAIN_ABOVE_BITS`) and reading
the mappings stay plain Python.
"""

from __future__ import annotations

import functools
import json
import math
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FEATURES", "MODEL_FILE", "UNCERTAIN_ABOVE_BITS", "confidence_features", "confidence_prediction",
           "linear_prediction", "load_models", "predicted_dice", "predicted_dice_text", "row_predicted_dice",
           "select_model", "uncertainty_map", "uncertainty_sidecar"]

FEATURES = ("partner_dice", "axis_dice", "entropy", "soft_dice")
#: Voxels whose averaged hippocampus probability exceeds this make the region the entropy is averaged over.
REGION_PROBABILITY = 0.05
MODEL_FILE = Path(__file__).resolve().parent / "resources" / "confidence_model.json"
#: The QC picture shades voxels whose :func:`uncertainty_map` exceeds this (bits; the map's maximum for 3 classes is
#: log2(3) = 1.58; 0.5 bit is about a 90/10 split between two classes). Measured with the shipped default model on
#: the first 12 fold-0 validation crops (labels against the truth): 25 % of the voxels of 0.5-0.6 bit are labelled
#: wrong (0.1 % of those below 0.05 bit, 51 % of those above 1 bit); the voxels above 0.5 bit, a rim of about a third
#: of the mask's volume, are wrong in 37 % and hold 62 % of all wrongly labelled voxels; those below, in 0.4 %.
UNCERTAIN_ABOVE_BITS = 0.5


def _array(value) -> np.ndarray:
    import numpy as np

    value = value.detach().cpu() if hasattr(value, "detach") else value
    value = value.as_tensor() if hasattr(value, "as_tensor") else value
    return np.asarray(value, dtype=np.float32)


def _first(value) -> np.ndarray:
    """(C, X, Y, Z) of a (B=1, C, X, Y, Z) or (C, X, Y, Z) array."""
    array = _array(value)
    return array[0] if array.ndim == 5 else array


def _mask(prob: np.ndarray) -> np.ndarray:
    """Hippocampus (any foreground class) where the argmax is not background (the first of equal maxima, as
    ``argmax`` takes it: a tie with the background is background)."""
    return prob[0] < prob[1:].max(axis=0)


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    import numpy as np

    p = np.clip(p, np.float32(1e-6), np.float32(1 - 1e-6))
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def confidence_features(parts: dict) -> dict[str, float]:
    """:data:`FEATURES` from an inferer's ``parts`` (``"prob"``, ``"axes"``, ``"core"``, ``"partner"``; arrays or
    tensors ``(1, C, X, Y, Z)`` or ``(C, X, Y, Z)``; ``"axes"``/``"partner"`` may be missing or None: NaN)."""
    import numpy as np

    from hipposeg.metrics import dice

    prob = _first(parts["prob"])
    mask = _mask(prob)
    axes = [_mask(_first(a)) for a in parts.get("axes") or []]
    axis_dice = float(np.mean([dice(a, b) for a, b in combinations(axes, 2)])) if len(axes) > 1 else math.nan
    core, partner = parts.get("core"), parts.get("partner")
    partner_dice = dice(_mask(_first(core)), _mask(_first(partner))) if core is not None and partner is not None \
        else math.nan
    foreground = 1.0 - prob[0]
    region = foreground > REGION_PROBABILITY
    entropy = float(_binary_entropy(foreground[region]).mean()) if region.any() else 0.0
    denominator = float(foreground.sum() + mask.sum())
    soft = 1.0 if denominator == 0 else 2.0 * float((foreground * mask).sum()) / denominator
    return {"partner_dice": partner_dice, "axis_dice": axis_dice, "entropy": entropy, "soft_dice": soft,
            "mask_voxels": int(mask.sum())}


def load_models(path: str | Path | None = None) -> tuple[dict, ...]:
    """The stored mappings, in their order (default :data:`MODEL_FILE`): each with ``features``, ``intercept``,
    ``coefficients``, ``low_confidence_below`` and how it was fitted (``fitted_on``, ``scored``, ``command``); empty
    when no file is there. A file of one bare mapping (the format before there were several) reads as a list of
    one. Read again only when the file changed (cached by path, modification time and size): callers must not
    change the dicts."""
    path = Path(path or MODEL_FILE)
    if not path.is_file():
        return ()
    stat = path.stat()
    return _read_models(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_models(path: str, mtime_ns: int, size: int) -> tuple[dict, ...]:
    stored = json.loads(Path(path).read_text())
    return tuple(stored["models"]) if "models" in stored else (stored,)


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def select_model(features: dict, models: tuple[dict, ...] | list[dict] | None = None) -> dict | None:
    """The first of ``models`` (default: the stored ones, :func:`load_models`) whose features are all in
    ``features`` and finite (with a partner the mapping that uses ``partner_dice``, for the core alone one without
    it); None when none is."""
    models = load_models() if models is None else models
    return next((m for m in models if all(_finite(features.get(name)) for name in m["features"])), None)


def linear_prediction(features: dict, model: dict) -> float | None:
    """``intercept + sum(coefficient * feature)`` clipped to [0, 1]; None when a feature the model needs is
    missing or NaN (e.g. ``partner_dice`` for the core alone)."""
    values = [features.get(name) for name in model["features"]]
    if not all(_finite(v) for v in values):
        return None
    raw = float(model["intercept"]) + sum(float(c) * float(v) for c, v in zip(model["coefficients"], values))
    return min(1.0, max(0.0, raw))


def _prediction(features: dict, models) -> tuple[float | None, dict | None]:
    """(predicted Dice, the mapping of ``models`` that made it): see :func:`predicted_dice`."""
    if not models:
        return None, None
    model = select_model(features, models)
    if features.get("mask_voxels", 1) == 0:
        return 0.0, model or models[0]
    return (None, None) if model is None else (linear_prediction(features, model), model)


def predicted_dice(features: dict, model: dict | None = None) -> float | None:
    """The whole-hippocampus Dice the features predict, in [0, 1]: 0 for an empty mask (the crop or side is
    expected to hold a hippocampus), else the linear mapping (:func:`linear_prediction`) ``model`` or, by default,
    the first stored one whose features are all there (:func:`select_model`); None without a stored mapping or
    with none whose features are all there (``model``: with a feature it needs missing)."""
    return _prediction(features, load_models() if model is None else (model,))[0]


def confidence_prediction(features: dict, models: tuple[dict, ...] | list[dict] | None = None) -> dict:
    """``{"predicted_dice": value, "low_confidence_below": threshold}``: :func:`predicted_dice` with the mapping
    of ``models`` (default: the stored ones) it takes, and that mapping's ``low_confidence`` threshold (both None
    when no mapping predicts; an empty mask's 0 takes the threshold of the first mapping when none has all its
    features)."""
    value, model = _prediction(features, load_models() if models is None else models)
    threshold = None if value is None or model is None else float(model["low_confidence_below"])
    return {"predicted_dice": value, "low_confidence_below": threshold}


def uncertainty_map(probabilities: np.ndarray) -> np.ndarray:
    """Per-voxel entropy (bits) of class probabilities ``(C, *shape)``: 0 where one class is certain (exactly 0
    where a probability is 1), up to ``log2(C)`` where all are equally likely. float32, ``shape``."""
    import numpy as np

    p = np.asarray(probabilities, dtype=np.float32)
    entropy = -(p * np.log2(np.clip(p, np.float32(1e-6), np.float32(1.0)))).sum(axis=0)
    return np.maximum(entropy, np.float32(0.0)).astype(np.float32)


def uncertainty_sidecar(whole_head: bool) -> dict:
    """The JSON sidecar of a saved :func:`uncertainty_map` (BIDS-style keys): what its voxel values are, their unit
    and range, and on which grid (``whole_head``: the head's, from both side crops mapped back; else the crop's)."""
    classes = ["background", "anterior", "posterior"]
    grid = ("the T1w's own grid (that of the _dseg.nii.gz): each side's crop probabilities mapped back trilinearly "
            "as the labels are, 0 outside the two crops, the larger value where they overlap") if whole_head else \
        "the input's own grid (the mask's): the probabilities resampled back as the labels are"
    return {"Description": "Per-voxel uncertainty of the hipposeg segmentation: the Shannon entropy, in bits (log "
                           "base 2), of the averaged class probabilities the labels are the argmax of (the 2.5D "
                           "core's three slicing axes averaged, with the 3D partner where there is one), over the "
                           f"classes {', '.join(classes)}: 0 where one class is certain, log2({len(classes)}) at "
                           f"most, where all are equally likely (hipposeg.confidence.uncertainty_map). In {grid}. "
                           "The QC picture shades the voxels above UncertainAboveBits.",
            "Units": "bit", "Classes": classes, "Range": [0.0, round(math.log2(len(classes)), 4)],
            "UncertainAboveBits": UNCERTAIN_ABOVE_BITS}


def row_predicted_dice(row: dict) -> dict[str, float]:
    """The predicted Dice of a volume row (:func:`predicted_dice`), numbers or their text: ``{"": value}`` for a
    crop (``predicted_dice``), ``{"left": ..., "right": ...}`` for a whole head (``predicted_dice_<side>``); what is
    empty, missing or not a number is left out."""
    values = {}
    for side, key in (("", "predicted_dice"), ("left", "predicted_dice_left"), ("right", "predicted_dice_right")):
        try:
            value = float(row.get(key))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            values[side] = value
    return values


def predicted_dice_text(row: dict) -> str:
    """``"0.83"`` (a crop), ``"L 0.80 / R 0.85"`` (a whole head) or ``""`` (none) from a volume row."""
    values = row_predicted_dice(row)
    if "" in values:
        return f"{values['']:.2f}"
    return " / ".join(f"{side[0].upper()} {value:.2f}" for side, value in values.items())
