"""Robustness and trust: accuracy under acquisition problems, and how well the predicted Dice finds the failures.

Run: ``python bench/robustness.py [--model NAME|FILE] [--max-cases N] [--heads/--no-heads] [--data-root DIR]``
writes ``bench/results/robustness.json``; ``python bench/robustness.py --fit`` then fits the confidence mapping
of those results' feature set on them and adds its scores to the JSON; both rebuild the ``robustness-*`` tables of
``bench/README.md`` through ``tools/publish_docs.py``. The mapping file (``hipposeg/resources/confidence_model.json``)
holds one mapping per feature set, each with its own threshold and record of how it was fitted: ``--fit`` writes or
replaces the one of its feature set and keeps the others (:func:`merge_models`), so a run of the default (the core
alone: ``partner_dice`` is NaN and left out) fits the core-alone mapping and a run of ``--model ensemble`` the one
that uses ``partner_dice``. A result JSON holds one run, so give the second run its own ``--out``; ``--fit``
writes the shipped file from the default ``--out`` and, from another, ``<out>.model.json`` beside it unless
``--model-out`` names the file (e.g. ``python bench/robustness.py --model ensemble --out
bench/results/robustness-ensemble.json``, then ``python bench/robustness.py --fit --out
bench/results/robustness-ensemble.json --model-out hipposeg/resources/confidence_model.json``).

Every fold-0 crop (held out from the shipped weights' training) is segmented clean and re-made with each of
:data:`CORRUPTIONS` at three severity levels (ROOD-MRI-like: Boone et al., NeuroImage 2023), each seeded per case,
type and level so the bench is reproducible. The corruptions are TorchIO's (``RandomBiasField``, ``RandomGhosting``,
``RandomMotion`` - k-space motion, ``RandomBlur``, ``RandomAnisotropy`` - thick slices resampled back,
``RandomGamma`` - contrast, ``RandomSpike`` - a k-space spike) and MONAI's ``RandRicianNoise`` (magnitude-image
noise, its standard deviation a fraction of the crop's bright-tissue level, the 99th intensity percentile). TorchIO
is a bench-only dependency (``pip install torchio``); ``hipposeg`` never imports it.

Each copy goes through :func:`hipposeg.segment.segment_case`, the engine of ``hipposeg segment`` (the segmenter
loaded once by :func:`hipposeg.segmenter.load_segmenter`), and is scored against the crop's label with
:func:`hipposeg.metrics.case_metrics`. Per type and level the table gives mean whole/anterior/posterior Dice, the
paired whole-Dice difference to clean with its standard error (case sampling only), the mean absolute volume error,
and the cases below Dice 0.8 and 0.7. The three whole heads of ``fullhead/`` get the same corruptions through the
whole-head path (Dice per side against ``hippocampus_lr``), scored but never used for fitting.

``--fit``: the confidence features of every crop copy (:mod:`hipposeg.confidence`) -> whole Dice by linear least
squares, scored by 6-fold cross-validation grouped by case (all copies of a crop in one fold, so no crop is scored by
a mapping fitted on any of its copies): AUROC for Dice < 0.8, the area under the risk-coverage curve (risk 1 - Dice),
Spearman correlation, beside the baselines that exist today (the QC flags; the volume's distance to the reference
range). The features are those of :data:`hipposeg.confidence.FEATURES` that are finite in every copy. The stored
mapping is then refitted on every fold-0 copy; its ``low_confidence`` threshold is the highest that flags at most
5 % of the clean crops in the cross-validated predictions.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from common import RESULTS, describe_machine, format_paired, machine, markdown_table, paired, provenance, \
    read_result, this_command, write_result
from doc_blocks import fill_block  # tools/ is on sys.path through common

DEFAULT_OUT = RESULTS / "robustness.json"
MODEL_OUT = Path(__file__).resolve().parent.parent / "hipposeg" / "resources" / "confidence_model.json"
#: The mapping file's description (its ``models``: one mapping per feature set, :func:`merge_models`).
MODELS_DESCRIPTION = ("predicted whole-hippocampus Dice = intercept + sum(coefficient x feature), clipped to [0, 1] "
                      "(hipposeg.confidence); 0 for an empty mask; one mapping per feature set, the richer sets "
                      "first: a result's predicted Dice comes from the first whose features it has, all finite (with "
                      "the 3D partner, one with partner_dice; the core alone, one without), and is flagged "
                      "low_confidence below that mapping's low_confidence_below; bench/robustness.py --fit writes "
                      "the mapping of its run's feature set and keeps the others")
LEVELS = ("mild", "moderate", "severe")
FAIL_BELOW = (0.8, 0.7)
CV_FOLDS = 6
CLEAN_FALSE_ALARMS = 0.05
HEAD_SUBJECTS = ("colin27", "candi030", "bert")

#: type -> (what it is, the three severity parameters, how the parameter reads)
CORRUPTIONS = {
    "bias_field": ("TorchIO RandomBiasField, order 3, coefficients in +-c", (0.2, 0.4, 0.6), "c"),
    "rician_noise": ("MONAI RandRicianNoise, std = f x the 99th intensity percentile", (0.03, 0.06, 0.10), "f"),
    "ghosting": ("TorchIO RandomGhosting, 4 ghosts along a random axis, intensity i", (0.3, 0.6, 1.0), "i"),
    "motion": ("TorchIO RandomMotion (k-space), d movements of up to d degrees and d mm", (1.0, 2.0, 4.0), "d"),
    "blur": ("TorchIO RandomBlur, Gaussian of FWHM w mm", (1.0, 1.6, 2.4), "w"),
    "thick_slices": ("TorchIO RandomAnisotropy, one random axis downsampled x s and resampled back", (2.0, 3.0, 4.0),
                     "s"),
    "contrast": ("TorchIO RandomGamma, intensity^gamma with |log gamma| = g, sign random", (0.2, 0.4, 0.6), "g"),
    "spike": ("TorchIO RandomSpike, one k-space spike of relative intensity r", (0.3, 0.6, 1.0), "r"),
}


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def corrupt(array: np.ndarray, affine: np.ndarray, kind: str, value: float, seed: int) -> np.ndarray:
    """``array`` (X, Y, Z, in the voxel grid ``affine``) with one corruption of parameter ``value``; the same seed
    gives the same copy."""
    import torch
    import torchio as tio

    data = torch.as_tensor(np.asarray(array, dtype=np.float32))[None]
    if kind == "rician_noise":
        from monai.transforms import RandRicianNoise

        std = float(value) * float(np.percentile(array, 99))
        noise = RandRicianNoise(prob=1.0, std=std, sample_std=False, relative=False)
        noise.set_random_state(seed=seed % 2**32)
        return np.asarray(noise(data)[0], dtype=np.float32)
    rng = np.random.default_rng(seed)
    transform = {
        "bias_field": lambda: tio.RandomBiasField(coefficients=value, order=3),
        "ghosting": lambda: tio.RandomGhosting(num_ghosts=(4, 4), axes=(0, 1, 2), intensity=(value, value)),
        "motion": lambda: tio.RandomMotion(degrees=value, translation=value, num_transforms=max(1, round(value))),
        "blur": lambda: tio.RandomBlur(std=(value / 2.3548, value / 2.3548)),
        "thick_slices": lambda: tio.RandomAnisotropy(axes=(0, 1, 2), downsampling=(value, value)),
        "contrast": lambda: tio.RandomGamma(log_gamma=(float(rng.choice([-1, 1])) * value,) * 2),
        "spike": lambda: tio.RandomSpike(num_spikes=1, intensity=(value, value)),
    }[kind]()
    torch.manual_seed(seed)
    image = tio.ScalarImage(tensor=data.clone(), affine=np.asarray(affine, dtype=np.float64))
    out = transform(image).data[0].numpy().astype(np.float32)
    return out


def conditions(levels=LEVELS) -> list[tuple[str, str | None, float | None]]:
    """``(name, type, parameter)``: clean first, then every type at every level of ``levels``."""
    out = [("clean", None, None)]
    for kind, (_, values, _) in CORRUPTIONS.items():
        out += [(f"{kind}/{level}", kind, v) for level, v in zip(LEVELS, values) if level in levels]
    return out


# -------------------------------------------------------------------------------------------------- measuring


def run_crops(segmenter, datalist: list[dict], log) -> Iterator[list[dict]]:
    """Segment and score every crop clean and corrupted; yields the records so far after each crop."""
    from hipposeg.data.readers import Image, read_image
    from hipposeg.metrics import case_metrics
    from hipposeg.segment import segment_case
    from hipposeg.volumes import reference_volume_ranges, volume_row

    names = {0: "background", 1: "anterior", 2: "posterior"}
    ranges = reference_volume_ranges()
    records = []
    for i, item in enumerate(datalist):
        image, truth = read_image(item["image"]), read_image(item["label"])
        for name, kind, value in conditions():
            array = image.array if kind is None else corrupt(image.array, image.affine, kind, value,
                                                             _seed(item["case"], name))
            copy = Image(array, image.affine, path=f"{image.path}#{name}")
            t0 = time.perf_counter()
            labels, _, qc = segment_case(copy, segmenter, mode="crop")
            seconds = time.perf_counter() - t0
            metrics = case_metrics(labels, truth.array, image.spacing, names)
            row = volume_row(item["case"], name, labels, image.affine, names, ranges)  # today's flags only
            records.append({
                "case": item["case"], "condition": name,
                **{k: round(metrics[k], 4) for k in ("dice_whole", "dice_anterior", "dice_posterior")},
                "volume_pred_mm3": metrics["volume_pred_mm3"], "volume_true_mm3": metrics["volume_true_mm3"],
                "qc_flags": row["qc_flags"], "predicted_dice": qc.get("predicted_dice"),
                "features": {k: _rounded(v) for k, v in qc.get("confidence", {}).get("crop", {}).items()
                             if k not in ("predicted_dice", "low_confidence_below")},
                "seconds": round(seconds, 3)})
        log(f"crop {i + 1}/{len(datalist)} {item['case']}: clean Dice {records[-len(conditions())]['dice_whole']:.3f}")
        yield records


def run_heads(segmenter, data_root: Path, log, levels=LEVELS) -> list[dict]:
    from hipposeg.data.readers import Image, read_image
    from hipposeg.fullhead.evaluation import dice_per_side
    from hipposeg.segment import segment_case

    records = []
    for subject in HEAD_SUBJECTS:
        folder = data_root / "fullhead" / subject
        image, truth = read_image(folder / "t1.nii.gz"), read_image(folder / "hippocampus_lr.nii.gz")
        for name, kind, value in conditions(levels):
            array = image.array if kind is None else corrupt(image.array, image.affine, kind, value,
                                                             _seed(subject, name))
            t0 = time.perf_counter()
            try:
                labels, _, qc = segment_case(Image(array, image.affine, path=f"{image.path}#{name}"), segmenter,
                                             mode="full-head")
            except Exception as exc:  # noqa: BLE001 - a corrupted head the path refuses is a result, not a crash
                records.append({"subject": subject, "condition": name, "error": str(exc).splitlines()[0]})
                continue
            dice = dice_per_side(labels, truth.array)
            records.append({"subject": subject, "condition": name,
                            "dice": {k: round(v, 4) for k, v in dice.items()},
                            "predicted_dice": {s: qc.get(f"predicted_dice_{s}") for s in ("left", "right")},
                            "qc_flags": ";".join(qc.get("flags", [])),
                            "seconds": round(time.perf_counter() - t0, 2)})
        log(f"head {subject}: clean Dice {records[-len(conditions(levels))].get('dice')}")
    return records


def _rounded(value):
    return round(value, 5) if isinstance(value, float) and math.isfinite(value) else value


# -------------------------------------------------------------------------------------------------- summaries


def summarise_crops(records: list[dict]) -> list[dict]:
    """One row per condition: mean Dice, paired whole-Dice difference to clean, volume error, failures."""
    clean = {r["case"]: r for r in records if r["condition"] == "clean"}
    rows = []
    for name, kind, value in conditions():
        sel = [r for r in records if r["condition"] == name]
        if not sel:
            continue
        delta = paired({r["case"]: r["dice_whole"] for r in sel}, {c: r["dice_whole"] for c, r in clean.items()})
        volerr = [abs(r["volume_pred_mm3"] - r["volume_true_mm3"]) / r["volume_true_mm3"] * 100 for r in sel]
        rows.append({
            "condition": name, "type": kind or "clean", "level": name.split("/")[1] if kind else "-",
            "parameter": value, "n": len(sel),
            **{f"mean_{k}": float(np.mean([r[k] for r in sel])) for k in ("dice_whole", "dice_anterior",
                                                                          "dice_posterior")},
            "delta_whole": None if delta is None else delta[0], "delta_se": None if delta is None else delta[1],
            "abs_volume_error_pct": float(np.mean(volerr)),
            **{f"n_below_{t}": sum(r["dice_whole"] < t for r in sel) for t in FAIL_BELOW},
            "n_flagged": sum(bool(r["qc_flags"]) for r in sel),
        })
    return rows


def summarise_levels(rows: list[dict]) -> dict:
    """Mean whole-Dice loss over the types per level, and the worst type."""
    out = {}
    for level in LEVELS:
        sel = [r for r in rows if r["level"] == level and r["delta_whole"] is not None]
        if sel:
            worst = min(sel, key=lambda r: r["delta_whole"])
            out[level] = {"mean_delta_whole": float(np.mean([r["delta_whole"] for r in sel])),
                          "worst_type": worst["type"], "worst_delta_whole": worst["delta_whole"]}
    return out


# -------------------------------------------------------------------------------------------- fitting the map


def aurc(confidence: np.ndarray, risk: np.ndarray) -> float:
    """Area under the risk-coverage curve: keep cases from the most confident down; the mean risk of the kept cases
    averaged over every coverage 1/n .. 1. Ties in confidence count at their mean risk (the expected curve over
    the orders a tie allows), so a yes/no score is not favoured by the order of the cases."""
    confidence, risk = np.asarray(confidence, float), np.asarray(risk, float)
    order = np.argsort(-confidence, kind="stable")
    c, r = confidence[order], risk[order].copy()
    for value in np.unique(c):
        tie = c == value
        r[tie] = r[tie].mean()
    return float(np.mean(np.cumsum(r) / np.arange(1, len(r) + 1)))


def detection_scores(confidence: np.ndarray, dice: np.ndarray) -> dict:
    """AUROC of the confidence for Dice < 0.8 (low confidence = failure), AURC, Spearman correlation."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    fail = dice < FAIL_BELOW[0]
    return {"auroc_dice_below_0.8": float(roc_auc_score(fail, -confidence)) if 0 < fail.sum() < len(fail) else None,
            "aurc": aurc(confidence, 1 - dice), "spearman": float(spearmanr(confidence, dice).statistic)}


def _design(records: list[dict], features: list[str]) -> np.ndarray:
    return np.array([[r["features"][f] for f in features] for r in records], dtype=float)


def fit_linear(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Least squares ``y ~ intercept + x @ coefficients``."""
    a = np.column_stack([np.ones(len(x)), x])
    solution = np.linalg.lstsq(a, y, rcond=None)[0]
    return float(solution[0]), solution[1:]


def fit_confidence(result: dict) -> dict:
    """Cross-validated scores of the mapping and its baselines on the crop copies; the mapping refitted on all."""
    from hipposeg.confidence import FEATURES, predicted_dice
    from hipposeg.volumes import reference_volume_ranges

    records = [r for r in result["crops"] if r.get("features")]
    features = [f for f in FEATURES if all(isinstance(r["features"].get(f), (int, float))
                                           and math.isfinite(r["features"][f]) for r in records)]
    cases = sorted({r["case"] for r in records})
    fold_of = {c: i % CV_FOLDS for i, c in enumerate(cases)}
    dice = np.array([r["dice_whole"] for r in records])
    x = _design(records, features)
    oof = np.zeros(len(records))
    for k in range(CV_FOLDS):
        test = np.array([fold_of[r["case"]] == k for r in records])
        intercept, coefficients = fit_linear(x[~test], dice[~test])
        model = {"features": features, "intercept": intercept, "coefficients": list(coefficients)}
        oof[test] = [predicted_dice(r["features"], model) for r, held_out in zip(records, test) if held_out]
    ranges = reference_volume_ranges()
    low, high = float(ranges["low"]), float(ranges["high"])
    volume = np.array([r["volume_pred_mm3"] for r in records])
    baselines = {
        "qc_flags": -np.array([len([f for f in r["qc_flags"].split(";") if f]) for r in records], dtype=float),
        "volume_in_range": np.minimum(volume - low, high - volume) / (high - low),
    }
    clean = np.array([r["condition"] == "clean" for r in records])
    thresholds = np.round(np.arange(0.50, 0.951, 0.005), 3)
    allowed = [t for t in thresholds if np.mean(oof[clean] < t) <= CLEAN_FALSE_ALARMS]
    threshold = float(max(allowed)) if allowed else float(thresholds[0])
    flagged = oof < threshold
    intercept, coefficients = fit_linear(x, dice)
    single = {f: detection_scores(x[:, i] if f != "entropy" else -x[:, i], dice) for i, f in enumerate(features)}
    unflagged = baselines["qc_flags"] == 0  # the copies today's flags pass: where a new score has to find failures
    quiet = {"n": int(unflagged.sum()), "n_dice_below_0.8": int((dice[unflagged] < FAIL_BELOW[0]).sum()),
             "predicted_dice": detection_scores(oof[unflagged], dice[unflagged]),
             "volume_in_range": detection_scores(baselines["volume_in_range"][unflagged], dice[unflagged])}
    return {
        "features": features, "n_copies": len(records), "n_cases": len(cases), "cv_folds": CV_FOLDS,
        "cv": {**detection_scores(oof, dice), "mean_abs_error": float(np.mean(np.abs(oof - dice)))},
        "baselines": {k: detection_scores(v, dice) for k, v in baselines.items()},
        "unflagged": quiet,
        "single_features_in_sample": single,
        "oracle_aurc": aurc(dice, 1 - dice),
        "low_confidence_below": threshold,
        "flag": {"clean_false_alarms": float(np.mean(flagged[clean])),
                 **{f"recall_dice_below_{t}": float(np.mean(flagged[dice < t])) if (dice < t).any() else None
                    for t in FAIL_BELOW},
                 "n_flagged": int(flagged.sum())},
        "model": {"features": features, "intercept": intercept, "coefficients": [float(c) for c in coefficients]},
        "predictions_cv": [round(float(p), 4) for p in oof],
    }


def model_file(fit: dict, result: dict, command: str = "python bench/robustness.py --fit") -> dict:
    """The stored mapping of a fit (one entry of the mapping file's ``models``): the linear model, its threshold
    and how it was fitted and scored (``command``: the fit's own)."""
    return {
        **fit["model"],
        "low_confidence_below": fit["low_confidence_below"],
        "fitted_on": f"{fit['n_copies']} copies of the {fit['n_cases']} fold-0 crops (clean and {len(CORRUPTIONS)} "
                     f"corruptions x {len(LEVELS)} levels, bench/robustness.py) segmented by "
                     f"{_networks(result)}; least squares on the whole Dice",
        "scored": f"{fit['cv_folds']}-fold cross-validation grouped by crop (out-of-fold predictions): AUROC "
                  f"(Dice < 0.8) {fit['cv']['auroc_dice_below_0.8']:.3f}, AURC {fit['cv']['aurc']:.4f}, Spearman "
                  f"{fit['cv']['spearman']:.3f}; the threshold is the highest flagging at most "
                  f"{CLEAN_FALSE_ALARMS:.0%} of the clean crops out of fold",
        "command": command,
    }


def _networks(result: dict) -> str:
    """``core + partner`` or ``core alone (no 3D partner)``: the networks a result was measured with."""
    partner = result.get("model_3d")
    return f"{result['model']} + {partner}" if partner else f"{result['model']} alone (no 3D partner)"


def merge_models(stored, mapping: dict) -> list[dict]:
    """The mappings to store: ``stored`` (the file's, :func:`hipposeg.confidence.load_models`) with ``mapping``
    in place of the one of the same feature set, or added, the others kept as they are; ordered by the number of
    features, most first (else in their stored order, an added one after those of its size), so that the first
    mapping whose features a result has, which :func:`hipposeg.confidence.select_model` takes, is the richest it
    can use."""
    key = set(mapping["features"])
    models = [mapping if set(m["features"]) == key else m for m in stored]
    if not any(set(m["features"]) == key for m in stored):
        models.append(mapping)
    return sorted(models, key=lambda m: -len(m["features"]))  # stable: equal sizes keep their order


def models_file(models: list[dict]) -> dict:
    """The mapping file: ``{"description": ..., "models": [...]}``."""
    return {"description": MODELS_DESCRIPTION, "models": list(models)}


# ---------------------------------------------------------------------------------------------------- tables


def build_table(result: dict) -> str:
    rows = result["summary"]
    measured = len({r["case"] for r in result["crops"]})
    runtime = f", {result['runtime']}" if result.get("runtime") else ""
    header = ["corruption", "level", "parameter", "Dice whole", "anterior", "posterior", "Δ whole vs clean",
              "volume error %", "< 0.8", "< 0.7", "flagged"]
    cells = []
    for r in rows:
        param = "–" if r["parameter"] is None else f"{CORRUPTIONS[r['type']][2]} = {r['parameter']:g}"
        delta = None if r["delta_whole"] is None or r["type"] == "clean" else (r["delta_whole"], r["delta_se"], r["n"])
        cells.append([r["type"], r["level"], param, f"{r['mean_dice_whole']:.3f}", f"{r['mean_dice_anterior']:.3f}",
                      f"{r['mean_dice_posterior']:.3f}", format_paired(delta), f"{r['abs_volume_error_pct']:.1f}",
                      r["n_below_0.8"], r["n_below_0.7"], r["n_flagged"]])
    lines = [f"`{result['command']}` ({_networks(result)}{runtime}; {measured} of the "
             f"{result['n_cases']} fold-0 crops; {describe_machine(result['machine'])}):", "",
             markdown_table(header, cells)]
    levels = result.get("levels", {})
    if levels:
        lines += ["", "Mean whole-Dice change over the types: " + "; ".join(
            f"{level} {v['mean_delta_whole']:+.4f} (worst {v['worst_type']} {v['worst_delta_whole']:+.4f})"
            for level, v in levels.items()) + "."]
    heads = [h for h in result.get("heads", []) if "dice" in h]
    if heads:
        measured = {h["condition"] for h in result["heads"]}
        head_rows = []
        for name in [c for c, _, _ in conditions() if c in measured]:
            cells = []
            for subject in HEAD_SUBJECTS:
                h = next((h for h in result["heads"] if h["subject"] == subject and h["condition"] == name), None)
                if h is None:
                    cells.append("–")
                elif "dice" not in h:
                    cells.append("refused")
                else:
                    p = h["predicted_dice"]
                    cells.append(" / ".join(f"{h['dice'][s]:.3f} ({_fmt(p.get(s))})" for s in ("left", "right")))
            head_rows.append([name, *cells])
        lines += ["", "Whole heads through `segment --full-head` (Dice per side against `hippocampus_lr`, another "
                  "labelling protocol than Task04's, whose Dice the mapping predicts; predicted Dice in brackets):", "",
                  markdown_table(["condition", *HEAD_SUBJECTS], head_rows)]
    return "\n".join(lines)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def build_confidence_table(result: dict) -> str:
    fit = result.get("confidence")
    if not fit:
        return "(not fitted yet: `python bench/robustness.py --fit`)"
    lines = [f"Predicted Dice from {', '.join(fit['features'])} (linear least squares), scored out of fold "
             f"({fit['cv_folds']}-fold cross-validation grouped by crop over the {fit['n_copies']} clean and corrupted "
             f"copies of the {fit['n_cases']} fold-0 crops); risk = 1 - Dice, oracle AURC {fit['oracle_aurc']:.4f}:",
             "", markdown_table(["score", "AUROC (Dice < 0.8)", "AURC", "Spearman"],
                                [[name, _num(s["auroc_dice_below_0.8"], 3), f"{s['aurc']:.4f}", f"{s['spearman']:.3f}"]
                                 for name, s in [("predicted Dice (cross-validated)", fit["cv"]),
                                                 *[(f"baseline: {k.replace('_', ' ')}", v)
                                                   for k, v in fit["baselines"].items()]]])]
    lines += ["", "Each feature alone, in sample (no fit; entropy negated): " + "; ".join(
        f"{name} AUROC {_num(v['auroc_dice_below_0.8'], 3)}, AURC {v['aurc']:.4f}"
        for name, v in fit["single_features_in_sample"].items()) + "."]
    quiet = fit["unflagged"]
    lines += ["", f"On the {quiet['n']} copies that no QC flag of today marks ({quiet['n_dice_below_0.8']} of them below "
              f"Dice 0.8): predicted Dice AUROC {_num(quiet['predicted_dice']['auroc_dice_below_0.8'], 3)}, AURC "
              f"{quiet['predicted_dice']['aurc']:.4f}; volume distance to the reference range AUROC "
              f"{_num(quiet['volume_in_range']['auroc_dice_below_0.8'], 3)}, AURC {quiet['volume_in_range']['aurc']:.4f}."]
    flag = fit["flag"]
    lines += ["", f"`low_confidence` below a predicted Dice of {fit['low_confidence_below']:.3f} (the highest "
              f"threshold flagging ≤ {CLEAN_FALSE_ALARMS:.0%} of the clean crops out of fold): flags "
              f"{flag['clean_false_alarms']:.1%} of the clean crops, "
              f"{_pct(flag['recall_dice_below_0.8'])} of the copies below Dice 0.8 and "
              f"{_pct(flag['recall_dice_below_0.7'])} of those below 0.7."]
    return "\n".join(lines)


def _num(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "–" if value is None else f"{value:.0%}"


BLOCKS = ("robustness-table", "robustness-confidence")


def publish() -> list[str]:
    """Rebuild this bench's blocks of ``bench/README.md`` (only these) from their templates, as
    ``tools/publish_docs.py`` does for every block. A block that cannot be filled (its markers are not in the file,
    or its template cannot be rendered from the results) stays as it is; each such problem is printed and returned.
    The file is rewritten only when a block changed."""
    from publish_docs import DOCS, DocError, Sources, render, template_path

    from hipposeg.data.writers import write_text

    readme, src, problems = DOCS["bench"], Sources(RESULTS), []
    old = readme.read_text() if readme.is_file() else ""
    text = old
    for name in BLOCKS:
        path = template_path("bench", name)
        try:
            body = render(path.read_text(), src, str(path))
        except (OSError, DocError) as e:
            problems.append(f"block {name!r} not rebuilt: {e}")
            continue
        filled = fill_block(text, name, body)
        if filled is None:
            problems.append(f"block {name!r} not rebuilt: {readme} has no <!-- {name} --> ... <!-- /{name} --> markers")
            continue
        text = filled
    if text != old:
        write_text(readme, text, overwrite=True)
    for line in problems:
        print(f"docs: {line}", file=sys.stderr)
    return problems


# ------------------------------------------------------------------------------------------------------ main


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="as hipposeg segment --model (default: the shipped default)")
    parser.add_argument("--max-cases", type=int, default=None, help="only the first N fold-0 crops")
    parser.add_argument("--heads", action=argparse.BooleanOptionalAction, default=True,
                        help="also the three whole heads (default: yes)")
    parser.add_argument("--head-levels", nargs="+", choices=LEVELS, default=["moderate"],
                        help="severity levels for the whole heads (default: moderate; each head run registers the "
                             "scan, ~5-10 s)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--fit", action="store_true",
                        help="fit the confidence mapping of the result's feature set on an existing result; written "
                             "into the mapping file in place of that feature set's, the others kept")
    parser.add_argument("--model-out", type=Path, default=None,
                        help="--fit: the mapping file to merge into (default: the shipped "
                             "hipposeg/resources/confidence_model.json for the default --out, else <out>.model.json)")
    parser.add_argument("--only-heads", action="store_true",
                        help="re-run the whole heads into an existing result (with the stored mapping in place)")
    parser.add_argument("--no-publish", action="store_true", help="do not rebuild the README tables")
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731

    if args.fit:
        result = read_result(args.out)
        if result is None:
            sys.exit(f"{args.out}: no results to fit on; run bench/robustness.py first")
        result["confidence"] = fit_confidence(result)
        from hipposeg.confidence import load_models

        # the shipped mappings only from the official results; a trial run's beside its own JSON. The mapping of
        # this run's feature set is written or replaced, the others kept
        model_out = args.model_out or (MODEL_OUT if args.out.resolve() == DEFAULT_OUT
                                       else args.out.with_suffix(".model.json"))
        mapping = model_file(result["confidence"], result, this_command(__file__, argv))
        write_result(model_out, models_file(merge_models(load_models(model_out), mapping)))
        write_result(args.out, result)
        log(f"fitted: {result['confidence']['cv']}; baselines {result['confidence']['baselines']}")
    elif args.only_heads:
        from hipposeg.data.manifest import resolve_data_root
        from hipposeg.segmenter import load_segmenter

        result = read_result(args.out)
        if result is None:
            sys.exit(f"{args.out}: no results to add the heads to; run bench/robustness.py first")
        segmenter = load_segmenter(args.model)
        if provenance(segmenter) != {k: result.get(k) for k in ("model", "model_3d")}:
            sys.exit(f"{args.out} was measured with another model; run the whole bench")
        t0 = time.perf_counter()
        result["heads"] = run_heads(segmenter, Path(resolve_data_root(args.data_root)), log, tuple(args.head_levels))
        result["heads_command"] = this_command(__file__, argv)
        result["heads_seconds"] = round(time.perf_counter() - t0, 1)
        write_result(args.out, result)
    else:
        from hipposeg.data.manifest import load_manifest, resolve_data_root
        from hipposeg.segmenter import load_segmenter

        data_root = resolve_data_root(args.data_root)
        datalist = load_manifest().datalist("msd_hippocampus", "val", 0, data_root=data_root,
                                            max_cases=args.max_cases)
        segmenter = load_segmenter(args.model)
        result = {"command": this_command(__file__, argv), **provenance(segmenter),
                  "runtime": getattr(segmenter, "runtime", "torch"), "machine": machine(),
                  "n_cases": len(datalist), "corruptions": {k: {"what": v[0], "levels": dict(zip(LEVELS, v[1]))}
                                                            for k, v in CORRUPTIONS.items()}}
        t0 = time.perf_counter()
        for records in run_crops(segmenter, datalist, log):
            result["crops"] = records
            result["summary"] = summarise_crops(records)
            write_result(args.out, result)  # after every crop: a killed run keeps what it measured
        result["levels"] = summarise_levels(result["summary"])
        result["crop_seconds"] = round(time.perf_counter() - t0, 1)
        if args.heads:
            result["heads"] = run_heads(segmenter, Path(data_root), log, tuple(args.head_levels))
        result["seconds"] = round(time.perf_counter() - t0, 1)
        write_result(args.out, result)
    if args.out.resolve() == DEFAULT_OUT and not args.no_publish:
        publish()
    return result


if __name__ == "__main__":
    main()
