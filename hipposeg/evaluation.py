"""Volumetric evaluation: one row per case (Dice whole/anterior/posterior, HD95, volumes) and a summary.

Two doors share it: the bundle's ``evaluate.json`` (a handler on the evaluator) and
``hipposeg evaluate PRED_DIR GT_DIR`` (files on disk).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from hipposeg.data.readers import case_name, is_nifti, read_image
from hipposeg.data.writers import write_text
from hipposeg.errors import InputError
from hipposeg.metrics import case_metrics, notebook_slice_dice, summarise
from hipposeg.volumes import rows_to_csv, voxel_size  # rows_to_csv: the one CSV writer

NOTEBOOK_SLICE_DICE = "notebook_slice_dice"
NOTEBOOK_NOTE = ("mean over batches of 32 consecutive non-empty axial slices of the whole-hippocampus Dice, the "
                 "reference notebook's metric; only for comparison with its published 0.839, not a volumetric Dice")


def build_summary(rows: Sequence[dict], slice_terms: Sequence[float] = ()) -> dict:
    """:func:`~hipposeg.metrics.summarise` of the rows, plus the notebook's slice Dice when there are terms."""
    summary = summarise(list(rows))
    if slice_terms:
        summary[NOTEBOOK_SLICE_DICE] = {"mean": float(np.mean(slice_terms)), "n_batches": len(slice_terms),
                                        "note": NOTEBOOK_NOTE}
    return summary


def write_report(rows: Sequence[dict], csv_path: str | Path, summary_path: str | Path | None = None,
                 slice_terms: Sequence[float] = (), overwrite: bool = False) -> dict:
    """Write the per-case CSV (and the summary JSON beside it); return the summary."""
    summary = build_summary(rows, slice_terms)
    write_text(csv_path, rows_to_csv(rows), overwrite=overwrite)
    if summary_path:
        write_text(summary_path, json.dumps(summary, indent=1) + "\n", overwrite=overwrite)
    return summary


def _label_case(path: str) -> str:
    name = case_name(path)
    return name[:-4] if name.endswith("_seg") else name


def predicted_dice_column(confidence: dict | None) -> dict:
    """``{"predicted_dice": value}`` of a case's confidence (the bundle's ``confidence: true``), as ``hipposeg
    segment`` writes it (:func:`hipposeg.segment.confidence_qc`), beside the Dice it predicts; ``{}`` without one."""
    from hipposeg.segment import confidence_qc

    qc = confidence_qc({"": confidence})
    return {"predicted_dice": qc["predicted_dice"]} if "predicted_dice" in qc else {}


class CaseMetricsWriter:
    """Evaluator handler: per case metrics from ``pred`` (labels) and the ground truth under ``label``;
    ``metrics.csv`` and ``summary.json`` in ``output_dir`` when the run completes (rank 0 only).

    The ground truth is either a label tensor on the prediction's grid (a config that loads the labels) or, in
    ``evaluate.json``, the label file's path, read as ``hipposeg evaluate`` reads it and compared in its own grid
    with the prediction ``Invertd`` put back there; the metrics are :func:`hipposeg.metrics.case_metrics` for both.
    With the inferer's confidence (``confidence: true`` in ``inference.json``) each row also holds the case's
    ``predicted_dice`` (:func:`predicted_dice_column`)."""

    def __init__(self, output_dir: str, label_names: dict, slice_dice_axis: int = 2):
        self.output_dir = Path(output_dir)
        self.label_names = {int(k): v for k, v in label_names.items()}
        self.slice_dice_axis = slice_dice_axis
        self.rows: list[dict] = []
        self.slice_terms: list[float] = []
        self.summary: dict = {}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _reset(self, engine) -> None:
        self.rows, self.slice_terms = [], []

    def _iteration(self, engine) -> None:
        outputs, batch = engine.state.output, engine.state.batch
        outputs, batch = (x if isinstance(x, list) else [x] for x in (outputs, batch))
        for item, batch_item in zip(outputs, batch):
            pred = np.asarray(item["pred"].detach().cpu())[0]
            label = item.get("label")
            if label is None:  # inference.json's evaluator: the ground truth is a path in the batch
                label = batch_item["label"]
            if isinstance(label, (str, Path)):  # read in its own grid, as hipposeg evaluate reads it
                truth_image = read_image(label)
                check_same_grid(getattr(item["pred"], "meta", {}).get("filename_or_obj", label), pred.shape,
                                getattr(item["pred"], "affine", None), truth_image)
                truth, spacing, source = np.rint(truth_image.array).astype(np.int16), truth_image.spacing, str(label)
            else:  # a (one-hot) label tensor on the prediction's grid
                truth = np.asarray(label.detach().cpu())
                truth = truth[0] if truth.ndim == 4 and truth.shape[0] == 1 else np.argmax(truth, 0)
                affine = getattr(label, "affine", None)
                spacing = voxel_size(np.asarray(affine)) if affine is not None else (1.0, 1.0, 1.0)
                source = str(getattr(label, "meta", {}).get("filename_or_obj", f"case_{len(self.rows)}"))
            row = {"case": _label_case(source), **case_metrics(pred, truth, spacing, self.label_names)}
            row.update(predicted_dice_column(item.get("confidence")))
            self.rows.append(row)
            self.slice_terms += notebook_slice_dice(pred, truth, axis=self.slice_dice_axis)

    def _completed(self, engine) -> None:
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self.rows, self.slice_terms))
            self.rows = [r for rows, _ in gathered for r in rows]
            self.slice_terms = [t for _, terms in gathered for t in terms]
            if dist.get_rank() != 0:
                return
        self.rows.sort(key=lambda r: r["case"])
        self.summary = write_report(self.rows, self.output_dir / "metrics.csv", self.output_dir / "summary.json",
                                    self.slice_terms, overwrite=True)
        s = self.summary
        if "dice_whole" in s:
            print(f"evaluated {s['n_cases']} cases: Dice whole {s['dice_whole']['mean']:.4f}, "
                  f"HD95 {s['hd95_whole_mm']['mean']:.2f} mm -> {self.output_dir / 'metrics.csv'}")


def check_same_grid(source, shape: tuple, affine, truth) -> None:
    """A prediction (of ``source``: a mask file, or the image evaluate.json segmented) must lie on its ground
    truth's grid: the same shape and, when ``affine`` is known, the same affine to 1e-3."""
    if tuple(shape) != tuple(truth.shape):
        raise InputError(source, f"shape {tuple(shape)} differs from ground truth {truth.path} shape {truth.shape}")
    if affine is not None and not np.allclose(np.asarray(affine), truth.affine, atol=1e-3):
        raise InputError(source, f"geometry (affine) differs from ground truth {truth.path}")


def pair_folders(pred_dir: str | Path, gt_dir: str | Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pair ``<case>_seg.nii.gz`` (or ``<case>.nii.gz``) predictions with ``<case>.nii.gz`` ground truths."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise InputError(folder, "no such folder")
    preds, unpaired = {}, []
    for p in sorted(pred_dir.iterdir()):
        if not is_nifti(p) or case_name(p).endswith("_prob"):  # probability maps are not label maps
            continue
        case = _label_case(str(p))
        if case in preds:
            unpaired.append(f"{p}: case {case} also predicted by {preds[case]}")
            continue
        preds[case] = p
    truths = {case_name(p): p for p in sorted(gt_dir.iterdir()) if is_nifti(p)}
    pairs = [(case, preds[case], truths[case]) for case in sorted(preds) if case in truths]
    unpaired += [f"{preds[c]}: no ground truth named {c}.nii.gz in {gt_dir}" for c in sorted(preds) if c not in truths]
    unpaired += [f"{truths[c]}: no prediction for this case in {pred_dir}" for c in sorted(truths) if c not in preds]
    if not pairs:
        raise InputError(pred_dir, f"no prediction pairs with a ground truth in {gt_dir}")
    return pairs, unpaired


def evaluate_pair(pred_path: Path, gt_path: Path, label_names: dict[int, str]) -> tuple[dict, list[float]]:
    pred, truth = read_image(pred_path), read_image(gt_path)
    check_same_grid(pred_path, pred.shape, pred.affine, truth)
    p, t = np.rint(pred.array).astype(np.int16), np.rint(truth.array).astype(np.int16)
    row = case_metrics(p, t, truth.spacing, label_names)
    return row, notebook_slice_dice(p, t)
