"""Accuracy benchmark: train through the bundle on the training folds, evaluate on fold 0, write a report.

    python bench/accuracy.py --row default              # train + evaluate one row, then refresh the table
    python bench/accuracy.py --row reference --minutes 15
    python bench/accuracy.py --table                    # only rebuild the table in bench/README.md

Every row is a set of ``python -m monai.bundle`` overrides (and overlay configs) of the shipped bundle, so what
is measured is exactly what users run. Inference-only variants (slicing axis, consensus, flip TTA, largest
component) re-evaluate an already trained row's checkpoint (``--eval-only``). Results go to
``bench/results/<row>.json``; the Markdown table between the markers in ``bench/README.md`` is rebuilt from all
result files, so no number is typed by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

from common import BENCH, CONFIGS, REPO, RESULTS, RUNS, replace_block, write_result
from common import bundle_command, paired, run_logged, shown_command
from hipposeg.bundle import parse_overrides

# name: (description, overlay configs under bench/configs, training overrides, evaluation overrides, trained row)
# The session-1 default, before the scanner-robustness augmentation became part of train.json.
# train.json's train#preprocessing#transforms: 2 RandRotated, 3 RandZoomd, 4 RandGaussianSmoothd (blur),
# 5 RandAdjustContrastd (gamma), 6 RandHistogramShiftd, 9 RandGaussianNoised; a disabled transform is left out of
# the chain, as the factory of those releases left out a transform whose probability was 0.
_AUG = "train#preprocessing#transforms#"
V1 = {f"{_AUG}{i}#_disabled_": True for i in (4, 5, 6, 9)}
# The 0.2.0 default, before the stronger spatial augmentation of 0.3.0 (the notebook's rotation and scaling).
V2 = {f"{_AUG}2#prob": 0.3, f"{_AUG}2#range_x": "$math.radians(5.0)",
      f"{_AUG}3#prob": 0.3, f"{_AUG}3#min_zoom": 0.9, f"{_AUG}3#max_zoom": 1.1}

# Rows trained before thick-slice simulation became part of train.json (0.5.0) switch it off to stay reproducible.
NO_THICK = {"train#dataset#thick_slice_prob": 0.0}

ROWS: dict[str, dict] = {
    "reference": {"about": "reference notebook recipe (2D, axial, non-empty slices only, Adam + plateau)",
                  "overlays": ["reference_recipe.json"], "train": {}, "eval": {}},
    "unet3d": {"about": "plain MONAI 3D UNet, 5 levels 16-256, DiceCE, crops padded to 48x64x48",
               "overlays": ["unet3d.json"], "train": {}, "eval": {}},
    "v1": {"about": "first default: 2.5D (3 slices), 3 axes pooled, 20% empty slices, AdamW one-cycle, flip / rotation / "
                    "scaling / intensity jitter; 3-axis consensus + largest component", "overlays": [],
           "train": {**V1, **V2, **NO_THICK}, "eval": {}},
    "v2": {"about": "0.2.0 default: v1 + scanner-robustness augmentation (gamma, histogram shift, in-plane blur, noise)",
           "overlays": [], "train": {**V2, **NO_THICK}, "eval": {}},
    "default": {"about": "hipposeg default (0.3.0): v2 + stronger spatial augmentation (in-plane rotation up to 15 "
                         "degrees and scaling 0.85-1.25, each with probability 0.5)", "overlays": [], "train": NO_THICK,
                "eval": {}},
    "robust-aug-fullres": {"about": "v2 + a skip connection at full resolution (network option full_res_skip)",
                           "overlays": [], "eval": {}, "train": {**V2, "full_res_skip": True, **NO_THICK}},
    "upsampled-1.5x": {"about": "default, network run on slices upsampled 1.5x (input_scale 1.5: finest features "
                                "at 1.3 mm instead of 2 mm)", "overlays": [], "eval": {},
                       "train": {"input_scale": 1.5, **NO_THICK}},
    "upsampled-1.5x-10ep": {"about": "upsampled-1.5x with 10 epochs, channels-last weights (0.3.1): the 1.5x recipe "
                                     "sized to the one-hour training budget", "overlays": [], "eval": {},
                            "train": {"input_scale": 1.5, "epochs": 10, **NO_THICK}},
    "default-thick": {"about": "default + thick-slice simulation in training (a quarter of the slices cut from the "
                               "volume as acquired with 1.3-2.5 mm slices along a random axis, random phase), "
                               "final-epoch weights", "overlays": [], "eval": {}, "final_epoch": True,
                      "train": {"train#dataset#thick_slice_prob": 0.25}},
    "unet3d-partner": {"about": "the 3D partner network alone (bundle overlay train_3d.json): MONAI residual UNet "
                                "32-320, 3D flip/rotation/scaling, thick-slice simulation, intensity/gamma/noise, "
                                "150 epochs, final-epoch weights", "overlays": ["train_3d.json"], "train": {},
                       "eval": {}, "final_epoch": True},
    # issue 27: partner candidates under one training budget (train_3d.json's schedule, the robustness augmentation
    # of bench/configs/trust_aug_3d.json, final-epoch weights), each alone and averaged with the shipped core
    "partner-unet16-trust": {"about": "partner candidate: plain MONAI UNet 16-256, instance norm (bench/configs/"
                                      "partner_unet16.json), robustness augmentation, 250 epochs, final-epoch weights",
                             "overlays": ["train_3d.json", "trust_aug_3d.json", "partner_unet16.json"],
                             "train": {"epochs": 250}, "eval": {}, "final_epoch": True},
    "shipped-core+partner-unet16-trust": {
        "about": "the shipped core models/model.pt + partner-unet16-trust (final epoch), probabilities averaged 1:1",
        "from": "default-thick", "ckpt": str(REPO / "bundles" / "hipposeg" / "models" / "model.pt"),
        "eval": {"partner_ckpt_path": str(RUNS / "partner-unet16-trust" / "model_final.pt")}},
    # issue 25: the 2.5D core with the robustness augmentation (configs/train_trust.json: a share of the slices
    # cut from volumes with a 3D acquisition problem), otherwise the shipped core's recipe (default-thick)
    "core-trust": {"about": "default-thick + the robustness augmentation (configs/train_trust.json: 35 % of the "
                            "slices not thickened cut from the volume after k-space motion, ghosting, a spike, bias "
                            "field, Rician noise or blur), final-epoch weights",
                   "overlays": ["train_trust.json"], "train": {}, "eval": {}, "final_epoch": True},
    # the same augmentation as a short fine-tuning of the core (issue 25 allows it when said): 0.8.0's shipped
    # weights (default-thick's final epoch, trained on folds 1-4) trained 4 more epochs on folds 1-4 at a third of
    # the learning rate, final epoch scored on fold 0; the shipped models/model.pt since 0.9.0. Its start, 0.8.0's
    # models/model.pt: ``git show 917deb3:bundles/hipposeg/models/model.pt > <bench runs>/default-thick/model_0.8.0.pt``
    "core-trust-ft": {"about": "0.8.0's shipped core (shipped-0.8) fine-tuned with the robustness augmentation "
                               "(configs/train_trust.json) on folds 1-4: 4 epochs, one-cycle up to learning rate 3e-4, "
                               "final-epoch weights; models/model.pt since 0.9.0", "overlays": ["train_trust.json"],
                      "final_epoch": True, "eval": {},
                      "train": {"init_weights": str(RUNS / "default-thick" / "model_0.8.0.pt"),
                                "epochs": 4, "learning_rate": 3e-4}},
    "core-trust+partner-unet16-trust": {
        "about": "core-trust + partner-unet16-trust (final epochs), probabilities averaged 1:1", "from": "core-trust",
        "eval": {"partner_ckpt_path": str(RUNS / "partner-unet16-trust" / "model_final.pt")}},
    # the 3D-aware ensembles: a 2.5D core's three-axis consensus averaged with the 3D partner's probabilities
    "shipped-0.5+partner": {"about": "ensemble: 0.5.0's default models/model_0.5.pt (1 mm slices) + the 3D partner "
                                     "(unet3d-partner, final epoch), probabilities averaged 1:1", "from": "default",
                            "ckpt": str(REPO / "bundles" / "hipposeg" / "models" / "model_0.5.pt"),
                            "eval": {"partner_ckpt_path": str(RUNS / "unet3d-partner" / "model_final.pt")}},
    "shipped-hires+partner": {"about": "ensemble: shipped model_hires.pt (slices upsampled 1.5x) + the 3D partner "
                                       "(unet3d-partner, final epoch), probabilities averaged 1:1",
                              "from": "upsampled-1.5x",
                              "ckpt": str(REPO / "bundles" / "hipposeg" / "models" / "model_hires.pt"),
                              "eval": {"partner_ckpt_path": str(RUNS / "unet3d-partner" / "model_final.pt")}},
    "shipped-0.5-ensemble": {"about": "0.5.0's opt-in ensemble (--model ensemble then): models/model_0.5.pt + "
                                      "models/model_3d.pt (the unet3d-partner final epoch in half precision)",
                             "from": "default", "ckpt": str(REPO / "bundles" / "hipposeg" / "models" / "model_0.5.pt"),
                             "eval": {"partner_ckpt_path": str(REPO / "bundles" / "hipposeg" / "models" /
                                                               "model_3d.pt")}},
    "default-thick+partner": {"about": "ensemble: default-thick (final epoch) + the shipped 3D partner models/model_3d.pt, "
                                       "probabilities averaged 1:1", "from": "default-thick",
                              "eval": {"partner_ckpt_path": str(REPO / "bundles" / "hipposeg" / "models" /
                                                                "model_3d.pt")}},
    # the ensemble's weight, chosen on fold 0 (the CV rows then use what is chosen here)
    **{f"default-thick+partner-w{w:g}": {
        "about": f"default-thick + the shipped 3D partner, partner weight {w:g} (probabilities "
                 f"{1 - w:g} core + {w:g} partner)", "from": "default-thick",
        "eval": {"partner_ckpt_path": str(REPO / "bundles" / "hipposeg" / "models" / "model_3d.pt"),
                 "partner_weight": w}} for w in (0.35, 0.65)},
    # inference-only variants of trained rows
    "v1-axis0": {"about": "v1 model, sagittal slices only", "from": "v1", "eval": {"inference_axes": [0]}},
    "v1-axis1": {"about": "v1 model, coronal slices only", "from": "v1", "eval": {"inference_axes": [1]}},
    "v1-axis2": {"about": "v1 model, axial slices only", "from": "v1", "eval": {"inference_axes": [2]}},
    "v1-no-lcc": {"about": "v1 model, consensus, no largest-component step", "from": "v1",
                  "eval": {"keep_largest": False}},
    "shipped-no-lcc": {"about": "the ensemble (then the default) without the largest-component step (v1-no-lcc and "
                                "the GPU ablation's no-lcc passed keep_largest as the string 'false', which left the "
                                "step on)",
                       "from": "default-thick", "ckpt": str(REPO / "bundles" / "hipposeg" / "models" / "model.pt"),
                       "eval": {"partner_ckpt_path": str(REPO / "bundles" / "hipposeg" / "models" / "model_3d.pt"),
                                "keep_largest": False}},
    "v1-tta": {"about": "v1 model, consensus + left-right flip TTA", "from": "v1", "eval": {"flip_tta": True}},
    "v2-tta": {"about": "v2 model, consensus + left-right flip TTA", "from": "v2", "eval": {"flip_tta": True}},
    "shipped": {"about": "the shipped default (0.9.0, hipposeg segment without --model, also --model core): "
                         "models/model.pt (core-trust-ft's final epoch in half precision: default-thick fine-tuned "
                         "with the robustness augmentation) alone; OpenVINO runs its int8 copy models/model_int8.*",
                "from": "core-trust-ft", "eval": {},
                "ckpt": str(REPO / "bundles" / "hipposeg" / "models" / "model.pt")},
    "shipped-0.8": {"about": "0.8.0's default: models/model.pt of 0.8.0 (default-thick's final epoch in half precision; "
                             "the start of core-trust-ft), float32", "from": "default-thick", "eval": {},
                    "ckpt": str(RUNS / "default-thick" / "model_0.8.0.pt")},
    "shipped-ensemble": {"about": "the opt-in ensemble (--model ensemble; the default of 0.6.0-0.7.0): models/model.pt "
                                  "(int8 under OpenVINO) + models/model_3d.pt (unet3d-partner's final epoch in half "
                                  "precision), probabilities averaged 1:1", "from": "core-trust-ft",
                         "ckpt": str(REPO / "bundles" / "hipposeg" / "models" / "model.pt"),
                         "eval": {"partner_ckpt_path": str(REPO / "bundles" / "hipposeg" / "models" / "model_3d.pt")}},
    "shipped-0.5": {"about": "0.5.0's default (--model default-0.5): models/model_0.5.pt (the default row's best "
                             "checkpoint in half precision)", "from": "default", "eval": {},
                    "ckpt": str(REPO / "bundles" / "hipposeg" / "models" / "model_0.5.pt")},
    "shipped-hires": {"about": "the shipped bundles/hipposeg/models/model_hires.pt (upsampled-1.5x checkpoint in half "
                               "precision), default inference", "from": "upsampled-1.5x", "eval": {},
                      "ckpt": str(REPO / "bundles" / "hipposeg" / "models" / "model_hires.pt")},
}


# Cross-validation of the 3D-aware recipe (issue 13): the recipe and epoch counts are fixed on fold 0, then the same
# training runs with another validation fold and is scored on it with its final-epoch weights (no checkpoint chosen
# on the fold that is scored): ``python bench/accuracy.py --row default-f1``, ``--row unet3d-partner-f1``, then
# ``--row default+partner-f1`` (inference only), the plain 3D UNet baseline ``--row unet3d-f1`` for the paired
# difference against it, and the same for fold 2.
for _fold in (1, 2):
    ROWS[f"default-f{_fold}"] = {"about": f"default 2.5D recipe (train.json, thick-slice simulation included), validation "
                                          f"fold {_fold}, final-epoch weights",
                                 "overlays": [], "train": {}, "eval": {}, "fold": _fold, "final_epoch": True}
    ROWS[f"unet3d-partner-f{_fold}"] = {**ROWS["unet3d-partner"], "fold": _fold,
                                        "about": f"the 3D partner recipe, validation fold {_fold}, final-epoch weights"}
    ROWS[f"unet3d-f{_fold}"] = {**ROWS["unet3d"], "fold": _fold, "final_epoch": True, "train": {"epochs": 65},
                                "about": f"the plain 3D UNet baseline (unet3d: 65 epochs, what its 15-minute budget "
                                         f"reached on fold 0), validation fold {_fold}, final-epoch weights"}
    ROWS[f"default+partner-f{_fold}"] = {
        "about": f"ensemble of default-f{_fold} and unet3d-partner-f{_fold} (1:1), scored on fold {_fold}",
        "from": f"default-f{_fold}", "ckpt": str(RUNS / f"default-f{_fold}" / "model_final.pt"),
        "eval": {"partner_ckpt_path": str(RUNS / f"unet3d-partner-f{_fold}" / "model_final.pt")}}


# Learning curve (issue 13: "training on all cases vs folds 1-4"): the same recipes trained on 3/5 of the labelled
# cases (folds 2-4; fold 1 left out as well) and scored on fold 0, final epoch. Against default-thick and
# unet3d-partner (4/5, the same fold 0) the paired difference is what a fifth more cases buys; the shipped model may
# be trained on all 208 only if that gain is clearly positive. ``python bench/accuracy.py --row default-3of5``, then
# ``--compare default-thick default-3of5``.
_THREE_FIFTHS = {"train#datalist": "$@manifest.datalist(@dataset, 'train', @fold, dataset_dir=@dataset_dir, "
                                   "max_cases=@max_cases, exclude_folds=[1])"}
ROWS["default-3of5"] = {"about": "learning curve: the default 2.5D recipe (train.json) trained on folds 2-4 (3/5 of the "
                                 "cases) instead of 1-4, scored on fold 0, final-epoch weights",
                        "overlays": [], "eval": {}, "final_epoch": True, "train": dict(_THREE_FIFTHS)}
ROWS["unet3d-partner-3of5"] = {**ROWS["unet3d-partner"], "train": {**ROWS["unet3d-partner"]["train"], **_THREE_FIFTHS},
                               "about": "learning curve: the 3D partner recipe (train_3d.json) trained on folds 2-4 "
                                        "(3/5 of the cases), scored on fold 0, final-epoch weights"}
ROWS["default+partner-3of5"] = {
    "about": "learning curve: ensemble of default-3of5 and unet3d-partner-3of5 (1:1; the default's recipe trained on "
             "3/5 of the cases), scored on fold 0",
    "from": "default-3of5", "ckpt": str(RUNS / "default-3of5" / "model_final.pt"),
    "eval": {"partner_ckpt_path": str(RUNS / "unet3d-partner-3of5" / "model_final.pt")}}


# The cross-validation table: each recipe's row per validation fold. Fold 0 is where the recipes were chosen (its
# ensemble uses models/model_3d.pt, the fold-0 partner's final epoch in half precision); folds 1 and 2 are held out.
CV_RECIPES = {
    "2.5D core (train.json), the default": ("default-thick", "default-f1", "default-f2"),
    "3D partner alone (train_3d.json)": ("unet3d-partner", "unet3d-partner-f1", "unet3d-partner-f2"),
    "core + partner, 1:1 (--model ensemble)": ("default-thick+partner", "default+partner-f1", "default+partner-f2"),
    "plain 3D UNet (baseline)": ("unet3d", "unet3d-f1", "unet3d-f2"),
}
CV_CORE, CV_BASELINE = "2.5D core (train.json), the default", "plain 3D UNet (baseline)"
HELD_OUT_FOLDS = (1, 2)


def overlay_path(name: str) -> str:
    """An overlay config of a row: the bundle's own (``configs/train_3d.json``) or a bench one (``bench/configs``)."""
    return str(CONFIGS / name if (CONFIGS / name).is_file() else BENCH / "configs" / name)


def train_row(name: str, minutes: float | None, epochs: int | None, extra: dict) -> dict:
    row = ROWS[name]
    out = RUNS / name
    out.mkdir(parents=True, exist_ok=True)
    files = [str(CONFIGS / "train.json")] + [overlay_path(o) for o in row["overlays"]]
    overrides = {"output_dir": str(out), "ckpt_dir": str(out), "fold": row.get("fold", 0), "seed": 0, **row["train"],
                 **extra}
    if minutes:
        overrides["max_minutes"] = minutes
    if epochs:
        overrides["epochs"] = epochs
    cmd = bundle_command(files, overrides)
    wall = run_logged(cmd, out / "train.log")
    if row.get("final_epoch"):
        export_final_weights(out)
    return {"train_command": shown_command(cmd), "train_wall_s": round(wall, 1)}


def export_final_weights(run_dir: Path) -> Path:
    """``model_final.pt``: the network of the last epoch (``checkpoint_final.pt``), for rows scored without picking
    a checkpoint on the fold they are scored on."""
    import torch

    state = torch.load(run_dir / "checkpoint_final.pt", map_location="cpu", weights_only=True)["network"]
    torch.save(state, run_dir / "model_final.pt")
    return run_dir / "model_final.pt"


def inference_overrides(overlays: list[str]) -> dict:
    """What a row's training overlays change at inference: their top-level keys that ``inference.json`` also has
    (``network_def``, ``context``, ``inference_axes``, ``keep_largest``, ...) and their validation inferer
    (``validate#inferer``) as the inferer; keys of training-only sections (``train#...``) do not apply."""
    inference = json.loads((CONFIGS / "inference.json").read_text())
    out, defined = {}, {}
    for overlay in overlays:
        content = json.loads(Path(overlay_path(overlay)).read_text())
        defined.update({k: v for k, v in content.items() if "#" not in k})
        out.update({k: v for k, v in content.items() if k in inference and k != "imports"})
        if "validate#inferer" in content:
            out["inferer"] = content["validate#inferer"]
    # what the carried items refer to (``@patch_size`` of a sliding-window inferer) and inference.json lacks
    text = json.dumps(out)
    out.update({k: v for k, v in defined.items() if k not in inference and re.search(rf"@{re.escape(k)}\b", text)})
    return out


def evaluate_row(name: str) -> dict:
    """Score a row's checkpoint on its validation fold through ``inference.json`` + ``evaluate.json``: the inference
    recipe users run, masks put back in each input's own grid, then compared with the ground truth there. The
    checkpoint runs alone unless the row names a ``partner_ckpt_path`` (then ``use_partner`` is set explicitly)."""
    row = ROWS[name]
    trained = row.get("from", name)
    base = ROWS[trained]
    out = RUNS / name / "eval"
    out.mkdir(parents=True, exist_ok=True)
    files = [str(CONFIGS / "inference.json"), str(CONFIGS / "evaluate.json")]
    weights = "model_final.pt" if base.get("final_epoch") else "model.pt"
    evaluation = {**inference_overrides(base["overlays"]), **row.get("eval", {})}
    overrides = {"ckpt_path": row.get("ckpt", str(RUNS / trained / weights)), "output_dir": str(out),
                 "fold": base.get("fold", 0), "use_partner": "partner_ckpt_path" in evaluation, **evaluation}
    cmd = bundle_command(files, overrides)
    wall = run_logged(cmd, out / "eval.log")
    summary = json.loads((out / "summary.json").read_text())
    return {"eval_command": shown_command(cmd), "eval_wall_s": round(wall, 1), "summary": summary,
            **per_case_metrics(out / "metrics.csv")}


PAIRED = ("dice_whole", "dice_anterior", "dice_posterior", "hd95_whole_mm", "abs_volume_error_mm3", "volume_pred_mm3",
          "volume_true_mm3")


def per_case_metrics(metrics_csv: Path) -> dict:
    """``per_case_<metric>``: {case: value} of the evaluation's metrics.csv, kept in the result for paired
    comparisons between rows (``--compare``)."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return {f"per_case_{m}": {r["case"]: round(float(r[m]), 5) for r in rows} for m in PAIRED if rows and m in rows[0]}


def volume_errors_percent(result: dict) -> tuple[float, float] | None:
    """(mean absolute, mean signed) whole-hippocampus volume error in percent of the reference volume, over the
    row's volumes; None for rows evaluated before per-case volumes were kept."""
    pred, true = result.get("per_case_volume_pred_mm3"), result.get("per_case_volume_true_mm3")
    if not pred or not true:
        return None
    errors = [100.0 * (pred[c] - true[c]) / true[c] for c in pred if c in true and true[c] > 0]
    return sum(abs(e) for e in errors) / len(errors), sum(errors) / len(errors)


def compare_rows(row: str, base: str) -> None:
    """Print the paired per-volume difference ``row`` minus ``base`` of every metric, and the volumes where the
    whole Dice differs most."""
    a, b = (json.loads((RESULTS / f"{n}.json").read_text()) for n in (row, base))
    print(f"{row} minus {base}, paired over the same volumes (mean ± standard error, n):")
    for m in PAIRED:
        p = paired(a.get(f"per_case_{m}", {}), b.get(f"per_case_{m}", {}))
        print(f"  {m:22s} " + ("–" if p is None else f"{p[0]:+.4f} ± {p[1]:.4f} (n={p[2]})"))
    wa, wb = a.get("per_case_dice_whole", {}), b.get("per_case_dice_whole", {})
    worst = sorted((c for c in wa if c in wb), key=lambda c: -abs(wa[c] - wb[c]))[:3]
    for c in worst:
        print(f"  {c}: " + ", ".join(f"{m} {a[f'per_case_{m}'][c]:.3f} vs {b[f'per_case_{m}'][c]:.3f}"
                                     for m in ("dice_whole", "hd95_whole_mm")
                                     if c in a.get(f"per_case_{m}", {}) and c in b.get(f"per_case_{m}", {})))


def fill_validation_from_log(run_dir: Path) -> None:
    """Runs made before the TrainingHistory fix recorded validation metrics for epoch 1 only; the evaluator's
    StatsHandler lines in train.log ("Epoch[n] Metrics -- val_mean_dice: x val_whole_dice: y") hold them all.
    Fill the gaps from there (marking the file), so the curve and the time to Dice 0.88 come from the run itself."""
    import re

    path, log = run_dir / "history.json", run_dir / "train.log"
    if not path.is_file() or not log.is_file():
        return
    history = json.loads(path.read_text())
    if all("val_whole_dice" in e for e in history["epochs"]):
        return
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        m = re.search(r"Epoch\[(\d+)\] Metrics -- (.*)$", line)
        if m:
            found[int(m.group(1))] = {k: float(v) for k, v in re.findall(r"(val_\w+): ([0-9.]+)", m.group(2))}
    for e in history["epochs"]:
        if "val_whole_dice" not in e and e["epoch"] in found:
            e.update(found[e["epoch"]])
    history["note"] = "validation metrics of epochs > 1 filled from train.log (TrainingHistory bug, fixed later)"
    path.write_text(json.dumps(history, indent=1))


def history_facts(name: str) -> dict:
    path = RUNS / ROWS[name].get("from", name) / "history.json"
    if not path.is_file():
        return {}
    fill_validation_from_log(path.parent)
    epochs = json.loads(path.read_text())["epochs"]
    reached = next((e["elapsed_s"] for e in epochs if e.get("val_whole_dice", 0) >= 0.88), None)
    return {"epochs": len(epochs), "train_elapsed_s": epochs[-1]["elapsed_s"] if epochs else None,
            "time_to_val_dice_0.88_s": reached,
            "best_val_whole_dice": max((e.get("val_whole_dice", 0) for e in epochs), default=None)}


def _fmt(summary: dict, key: str, stat: str = "mean", digits: int = 3) -> str:
    value = summary.get(key, {}).get(stat)
    return "–" if value is None else f"{value:.{digits}f}"


def paired_difference(row: dict, base: dict) -> str:
    """Mean per-volume difference of whole Dice, ``row`` minus ``base``, +- its standard error (the same volumes;
    case-sampling noise only, not seed-to-seed training noise)."""
    a, b = row.get("per_case_dice_whole"), base.get("per_case_dice_whole")
    p = None if not a or not b or row is base else paired(a, b)
    if p is None:
        return "–"
    shared = "" if p[2] == len(a) == len(b) else f" (n={p[2]})"
    return f"{p[0]:+.4f} ± {p[1]:.4f}{shared}"


def _volume_error_cell(result: dict) -> str:
    errors = volume_errors_percent(result)
    return "–" if errors is None else f"{errors[0]:.1f} / {errors[1]:+.1f}"


def _scored_on(name: str) -> str:
    """Which fold a row is scored on, and whether its weights were picked on that fold (best validation epoch) or
    are the final epoch's (a held-out number when the fold is not 0, the fold on which recipes are chosen)."""
    trained = ROWS[ROWS[name].get("from", name)]
    partner = " + final" if "partner_ckpt_path" in ROWS[name].get("eval", {}) else ""
    weights = "final epoch" if trained.get("final_epoch") else "best epoch on it"
    return f"fold {trained.get('fold', 0)} ({weights}{partner})"


def build_table() -> str:
    lines = ["| row | what | scored on | Dice whole mean / median | Δ whole vs `shipped` | Δ whole vs `unet3d` | anterior mean / median | "
             "posterior mean / median | HD95 mm mean / median | abs. volume error mm³ | volume error % abs. / signed | "
             "train wall (min) | epochs | time to val Dice 0.88 (min) | notebook slice Dice |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    results = {name: json.loads((RESULTS / f"{name}.json").read_text()) for name in ROWS
               if (RESULTS / f"{name}.json").is_file()}
    for name, r in results.items():
        s = r["summary"]
        wall = r.get("train_elapsed_s")
        reach = r.get("time_to_val_dice_0.88_s")
        lines.append(
            f"| `{name}` | {ROWS[name]['about']} | {_scored_on(name)} | {_fmt(s, 'dice_whole')} / {_fmt(s, 'dice_whole', 'median')} | "
            f"{paired_difference(r, results.get('shipped', {}))} | {paired_difference(r, results.get('unet3d', {}))} | "
            f"{_fmt(s, 'dice_anterior')} / {_fmt(s, 'dice_anterior', 'median')} | "
            f"{_fmt(s, 'dice_posterior')} / {_fmt(s, 'dice_posterior', 'median')} | "
            f"{_fmt(s, 'hd95_whole_mm', digits=2)} / {_fmt(s, 'hd95_whole_mm', 'median', 2)} | "
            f"{_fmt(s, 'abs_volume_error_mm3', digits=0)} | {_volume_error_cell(r)} | "
            f"{'–' if wall is None else f'{wall / 60:.1f}'} | "
            f"{r.get('epochs', '–')} | {'not reached' if reach is None else f'{reach / 60:.1f}'} | "
            f"{s.get('notebook_slice_dice', {}).get('mean', float('nan')):.3f} |")
    return "\n".join(lines)


def _pooled(results: list[dict], metric: str) -> dict[str, float]:
    """``{fold:case: value}`` of one per-case metric over several rows (cases of different folds never collide)."""
    return {f"{r['fold']}:{c}": v for r in results for c, v in r.get(f"per_case_{metric}", {}).items()}


def _cv_cells(results: list[dict], by_recipe: dict[str, list[dict]]) -> str:
    """Per-volume means over ``results`` (one or several folds pooled), and paired whole-Dice differences against
    the core and the baseline rows of the same folds."""
    whole = _pooled(results, "dice_whole")
    if not whole:
        return "– | – | – | – | – | – | –"
    cells = []
    for metric, digits in (("dice_whole", 3), ("dice_anterior", 3), ("dice_posterior", 3), ("hd95_whole_mm", 2)):
        values = [v for v in _pooled(results, metric).values() if v == v]
        cells.append(f"{sum(values) / len(values):.{digits}f}")
    pred, true = _pooled(results, "volume_pred_mm3"), _pooled(results, "volume_true_mm3")
    errors = [100.0 * (pred[c] - true[c]) / true[c] for c in pred if c in true and true[c] > 0]
    cells.append(f"{sum(map(abs, errors)) / len(errors):.1f} / {sum(errors) / len(errors):+.1f}" if errors else "–")
    folds = {r["fold"] for r in results}
    for other in (CV_CORE, CV_BASELINE):
        base = [r for r in by_recipe[other] if r["fold"] in folds]
        if not base or base == results:
            cells.append("–")
            continue
        # a pooled row whose baseline is not run on every fold yet: the paired difference on the folds both have
        common = [r for r in results if r["fold"] in {b["fold"] for b in base}]
        p = paired(_pooled(common, "dice_whole"), _pooled(base, "dice_whole"))
        only = f" (fold {'+'.join(str(b['fold']) for b in base)} only)" if len(common) < len(results) else ""
        cells.append("–" if p is None else f"{p[0]:+.4f} ± {p[1]:.4f}{only}")
    return " | ".join(cells)


def build_cv_table() -> str:
    """The cross-validation table (issue 13): every recipe per validation fold, final-epoch weights on folds 1 and
    2, and the two held-out folds pooled per volume."""
    by_recipe: dict[str, list[dict]] = {}
    for recipe, rows in CV_RECIPES.items():
        by_recipe[recipe] = []
        for fold, row in enumerate(rows):
            if (RESULTS / f"{row}.json").is_file():
                by_recipe[recipe].append({**json.loads((RESULTS / f"{row}.json").read_text()), "fold": fold,
                                          "name": row})
    lines = ["| recipe | fold (row) | n | Dice whole | anterior | posterior | HD95 mm | volume error % abs. / signed | "
             "Δ whole vs core | Δ whole vs plain 3D UNet |", "|---|---|---|---|---|---|---|---|---|---|"]
    for recipe, results in by_recipe.items():
        for r in results:
            chosen = " (recipe chosen here)" if r["fold"] == 0 else ""
            lines.append(f"| {recipe} | {r['fold']}{chosen} (`{r['name']}`) | {len(r.get('per_case_dice_whole', {}))} | "
                         f"{_cv_cells([r], by_recipe)} |")
        held = [r for r in results if r["fold"] in HELD_OUT_FOLDS]
        if held:
            folds = f"folds {'+'.join(str(r['fold']) for r in held)} pooled" if len(held) > 1 else f"fold {held[0]['fold']}"
            lines.append(f"| **{recipe}** | **held out ({folds})** | "
                         f"{sum(len(r.get('per_case_dice_whole', {})) for r in held)} | {_cv_cells(held, by_recipe)} |")
    return "\n".join(lines)


def write_table() -> None:
    readme = BENCH / "README.md"
    if not readme.is_file():
        readme.write_text("# Benchmarks\n\n<!-- accuracy-table -->\n<!-- /accuracy-table -->\n")
    if not replace_block(readme, "accuracy-table", build_table()):
        sys.exit(f"{readme}: the <!-- accuracy-table --> markers are missing")
    if not replace_block(readme, "cv-table", build_cv_table()):
        sys.exit(f"{readme}: the <!-- cv-table --> markers are missing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", choices=list(ROWS))
    parser.add_argument("--minutes", type=float, help="training wall-clock budget (stops after the epoch that ends past it)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="extra training override")
    parser.add_argument("--eval-only", action="store_true", help="re-evaluate the existing checkpoint")
    parser.add_argument("--table", action="store_true", help="only rebuild the table")
    parser.add_argument("--compare", nargs=2, metavar=("ROW", "BASE"),
                        help="print paired per-volume differences ROW minus BASE of every metric, and stop")
    args = parser.parse_args()
    if args.compare:
        compare_rows(*args.compare)
        return
    if args.row:
        RESULTS.mkdir(exist_ok=True)
        result = {"row": args.row, "about": ROWS[args.row]["about"], "machine": f"{platform.machine()}, "
                  f"{os.cpu_count()} CPU cores, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}",
                  "date": time.strftime("%Y-%m-%d %H:%M"),
                  "bench_command": "python bench/accuracy.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])}
        if "from" not in ROWS[args.row] and not args.eval_only:
            result.update(train_row(args.row, args.minutes, args.epochs, parse_overrides(args.set)))
            result["train_bench_command"] = result["bench_command"]
        elif (RESULTS / f"{args.row}.json").is_file():  # keep how the checkpoint was trained and notes
            previous = json.loads((RESULTS / f"{args.row}.json").read_text())
            trained = ("epochs", "time_to_val_dice_0.88_s", "best_val_whole_dice", "note")
            result.update({k: v for k, v in previous.items() if k.startswith("train_") or k in trained})
        result.update(history_facts(args.row))  # the training run's history, where this machine has it
        result.update(evaluate_row(args.row))
        write_result(RESULTS / f"{args.row}.json", result)
        s = result["summary"]
        print(f"{args.row}: Dice whole {_fmt(s, 'dice_whole')} anterior {_fmt(s, 'dice_anterior')} "
              f"posterior {_fmt(s, 'dice_posterior')} HD95 {_fmt(s, 'hd95_whole_mm', digits=2)} mm")
    write_table()
    publish_docs()  # every other block and metadata.json's figures from the results, as tools/publish_docs.py does


def publish_docs() -> None:
    sys.path.insert(0, str(REPO / "tools"))
    from publish_docs import publish

    _, errors = publish()
    for line in errors:
        print(f"docs: {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
