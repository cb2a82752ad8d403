"""``hipposeg segment``: masks, volumes and QC pictures for many scans, safe on bad input, kills and re-runs.

:func:`segment_inputs` is a small loop over :func:`segment_one_case` (read -> check -> segment -> volume row ->
write ``<case>_seg.nii.gz``, ``<case>_seg.json``, ``<case>_qc.png``, with ``save_uncertainty``
``<case>_uncertainty.nii.gz`` and, last, the row file ``<case>_volumes.json``), then rebuilds
``volumes.csv``/``volumes.json`` from every finished case in the folder.
The output folder is the state of the batch (:mod:`hipposeg.batch`): a re-run skips finished cases, redoes a case
whose input content changed or whose outputs a killed run left half-written, and ``overwrite`` redoes every given
case; a case another live run is segmenting is skipped. A bad case is reported in one line and the others still
run. Files named like outputs (``*_seg.nii.gz``, ``*_prob.nii.gz``) are never inputs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hipposeg.batch import (CaseFiles, FileLock, case_status, read_row_file, rebuild_volume_tables,
                            row_record, write_row_file)
from hipposeg.data.manifest import sha256_of
from hipposeg.data.readers import Image, case_name, check_volume, is_nifti, read_image
from hipposeg.data.writers import (check_output_folder, is_output_name, write_json, write_nifti,
                                   write_segmentation)
from hipposeg.errors import HippoSegError, InputError, one_line

CROP_LABELS = {0: "background", 1: "anterior", 2: "posterior"}


@dataclass
class CaseInput:
    case: str
    path: Path


@dataclass
class SegmentRun:
    """What one run did, case by case; ``tables`` are the rebuilt volume tables of the whole folder."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one line each: "<path>: <problem>"
    skipped: list[str] = field(default_factory=list)  # one line each: "<case>: <why>" (another run holds it)
    already_done: list[str] = field(default_factory=list)  # finished by an earlier run, same input content
    rows: list[dict] = field(default_factory=list)  # the volume rows of the cases segmented by this run
    seconds_per_case: list[float] = field(default_factory=list)
    tables: tuple = ()

    def raise_if_failed(self) -> "SegmentRun":
        """For the bundle door: a run with failed cases ends in an error listing them."""
        if self.failed:
            raise InputError(None, f"{len(self.failed)} case(s) failed: " + "; ".join(self.failed))
        return self

    def summary(self) -> str:
        per_case = f", {np.median(self.seconds_per_case):.2f} s per case (median)" if self.seconds_per_case else ""
        text = (f"segmented {len(self.done)} case(s), {len(self.failed)} failed, {len(self.skipped)} skipped, "
                f"{len(self.already_done)} already done{per_case}")
        if self.tables:
            text += f"; volume table: {self.tables[0]}"
        return text


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[CaseInput], list[str]]:
    """Files and folders -> cases. A folder holding NIfTI files gives one case per file; any other folder is
    taken as a DICOM series folder. Files named like hipposeg outputs (``*_seg.nii.gz``...) are never inputs: in a
    folder they are passed over, named explicitly they are a problem. Returns (cases, problems) — a missing path
    is a problem, not an abort."""
    cases, problems, seen = [], [], {}
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            problems.append(f"{path}: no such file or folder")
            continue
        if path.is_file() and is_output_name(path):
            problems.append(f"{path}: named like a hipposeg output (*_seg.nii.gz, *_prob.nii.gz), not segmented")
            continue
        if path.is_file():
            found = [path]
        else:
            listed = sorted(p for p in path.iterdir() if not p.name.startswith("."))
            found = [p for p in listed if is_nifti(p) and not is_output_name(p)]
            if not found and not any(is_nifti(p) for p in listed):
                found = [path]  # a DICOM series folder (checked when it is read)
        for item in found:
            name = case_name(item)
            if name in seen and seen[name] != item:  # e.g. sub-01/t1.nii.gz and sub-02/t1.nii.gz
                name = f"{item.parent.name}_{name}"
            if name in seen and seen[name] != item:
                problems.append(f"{item}: case name {name!r} already used by {seen[name]}; outputs would collide")
                continue
            seen[name] = item
            cases.append(CaseInput(name, item))
    return cases, problems


def default_inputs(data_root: str | None = None, n_labelled: int = 5) -> list[Path]:
    """The demo data: the unlabelled Task04 test image(s) and the first ``n_labelled`` validation-fold cases."""
    from hipposeg.data.manifest import load_manifest

    manifest = load_manifest()
    test = [Path(d["image"]) for d in manifest.datalist("msd_hippocampus", "test", data_root=data_root)]
    val = [Path(d["image"]) for d in manifest.datalist("msd_hippocampus", "val", 0, data_root=data_root)]
    return test + val[:n_labelled]


def segment_case(image: Image, segmenter, mode: str = "auto", *,
                 uncertainty: bool = False) -> tuple[np.ndarray, dict, dict]:
    """(labels in the input grid, label names, extra QC) for one checked image. The extra QC holds the predicted
    Dice (``predicted_dice``; whole heads: ``predicted_dice_left``/``_right``), its ``low_confidence`` flags and,
    under ``"confidence"``, the features behind it (:mod:`hipposeg.confidence`); with ``uncertainty``, the per-voxel
    map in the input grid under ``"uncertainty"`` (:func:`hipposeg.confidence.uncertainty_map` of the probabilities
    the labels come from; whole heads: :meth:`~hipposeg.fullhead.pipeline.FullHeadResult.uncertainty_map`)."""
    from hipposeg.fullhead.pipeline import is_full_head, segment_full_head

    full = mode == "full-head" or (mode == "auto" and is_full_head(image))
    if not full:
        result = segmenter.segment(image, return_probabilities=True) if uncertainty else segmenter.segment(image)
        qc = confidence_qc({"": getattr(result, "confidence", None)})
        if uncertainty:
            from hipposeg.confidence import uncertainty_map

            qc["uncertainty"] = uncertainty_map(result.probabilities)
        return result.labels, getattr(segmenter, "label_names", CROP_LABELS), qc
    from hipposeg.fullhead.icv import check_t1_weighted, intracranial_volume
    from hipposeg.fullhead.registration import register_to_template

    registration = register_to_template(image)
    check_t1_weighted(image, registration)  # a T2/FLAIR/PD image or a label map: one line, nothing written
    confidences: dict = {}
    result = segment_full_head(image, _side_predictor(segmenter, confidences), registration=registration)
    icv = intracranial_volume(image, registration)
    qc = {**result.qc, "etiv_mm3": icv["etiv_mm3"], "icv_mask_mm3": icv["icv_mask_mm3"],
          "flags": [*result.qc.get("flags", []), *icv["flags"]]}
    extra = confidence_qc(confidences)
    qc.update({k: v for k, v in extra.items() if k != "flags"})
    qc["flags"] += extra["flags"]
    if uncertainty:
        qc["uncertainty"] = result.uncertainty_map()
    return result.labels, {0: "background", **result.label_names}, qc


def _side_predictor(segmenter, confidences: dict) -> Callable:
    """The whole-head path's crop predictor: the segmenter's probabilities, each side crop's confidence kept in
    ``confidences[side]`` (a predictor without confidences, e.g. a test's, is used as it is)."""
    if not hasattr(segmenter, "predict_with_confidence"):
        return segmenter.predict_probabilities

    def predict(crop: Image) -> np.ndarray:
        probabilities, confidence = segmenter.predict_with_confidence(crop)
        confidences[crop.meta.get("side", "")] = confidence
        return probabilities

    return predict


def confidence_qc(confidences: dict) -> dict:
    """``{"predicted_dice[_side]": value, "flags": [low_confidence[_side], ...], "confidence": features}`` for
    the confidence of each side (``""``: a crop, one value); None confidences (a segmenter without them) give
    nothing. A side is flagged ``low_confidence`` when its predicted Dice is below the threshold of the stored
    mapping that predicted it, which its confidence carries (``"low_confidence_below"``,
    :func:`hipposeg.confidence.confidence_prediction`; none there: no flag)."""
    qc: dict = {"flags": []}
    for side, confidence in confidences.items():
        if not confidence:
            continue
        suffix = f"_{side}" if side else ""
        qc.setdefault("confidence", {})[side or "crop"] = confidence
        value = confidence.get("predicted_dice")
        if value is None:
            continue
        qc[f"predicted_dice{suffix}"] = round(float(value), 4)
        threshold = confidence.get("low_confidence_below")
        if threshold is not None and float(value) < float(threshold):
            qc["flags"].append(f"low_confidence{suffix}")
    return qc


def segment_one_case(item: CaseInput, segmenter, out_dir: str | Path, *, mode: str = "auto",
                     series_uid: str | None = None, qc_png: bool = True, save_uncertainty: bool = False,
                     sha256: str | None = None, files: CaseFiles | None = None) -> dict:
    """Read -> check -> segment -> volume row and flags -> write the case's outputs into ``out_dir``; return the
    row file's record (:func:`hipposeg.batch.row_record`; ``sha256``: the input's, when the caller has it).
    The uncertainty map (:func:`segment_case`) is computed for the QC picture, which shades its uncertain voxels,
    and for ``save_uncertainty``; only ``save_uncertainty`` writes it, to ``files.uncertainty`` (with the sidecar
    :func:`hipposeg.confidence.uncertainty_sidecar` at ``files.uncertainty_json`` where the layout has one).

    Writes replace this case's earlier outputs: the caller has decided the case must be (re)done and holds its
    lock (see :func:`segment_inputs`). The row file goes first (removed: the case is unfinished) and last
    (written: finished); should anything fail in between, what this call wrote is removed again. A bad input
    raises :class:`~hipposeg.errors.HippoSegError` before anything is written.
    """
    from hipposeg.confidence import uncertainty_sidecar
    from hipposeg.qc_picture import save_qc_png

    files = files or CaseFiles.of(out_dir, item.case)  # another layout: e.g. BIDS-Derivatives (hipposeg.bids)
    image = check_volume(read_image(item.path, series_uid=series_uid))
    labels, names, qc = segment_case(image, segmenter, mode, uncertainty=save_uncertainty or qc_png)
    uncertainty = qc.pop("uncertainty", None)
    row = case_row(item.case, str(item.path), labels, image.affine, names, qc, model_identity(segmenter))
    whole_head = "etiv_mm3" in row
    record = row_record(item.case, item.path, sha256 or sha256_of(item.path), row)
    uncertainty_files = [path for path in (files.uncertainty, files.uncertainty_json) if path]
    written: list[Path] = []
    try:
        files.row.unlink(missing_ok=True)
        for folder in {files.seg.parent, files.qc.parent, files.row.parent, files.uncertainty.parent}:
            folder.mkdir(parents=True, exist_ok=True)
        # a re-done case keeps no picture or map of its earlier run that this run does not write again
        stale = ([] if qc_png else [files.qc]) + ([] if save_uncertainty else uncertainty_files)
        for path in stale:
            path.unlink(missing_ok=True)
        written += [files.seg, files.labels]
        write_segmentation(files.seg, labels, image.affine, names, overwrite=True)
        if save_uncertainty:  # the map (and its sidecar, where the layout has one) in the input's grid
            written += uncertainty_files
            write_nifti(files.uncertainty, uncertainty, image.affine, overwrite=True)
            if files.uncertainty_json:
                write_json(files.uncertainty_json, uncertainty_sidecar(whole_head), overwrite=True)
        if qc_png:
            written.append(files.qc)
            save_qc_png(image.array, labels, image.affine, files.qc, names, title=qc_title(item.case, row),
                        uncertainty=uncertainty, overwrite=True)
        written.append(write_row_file(files, record))
    except BaseException:
        for path in written:  # a case that failed half-way leaves nothing behind
            path.unlink(missing_ok=True)
        raise
    return record


def qc_title(case: str, row: dict) -> str:
    """The QC picture's title: the case and its predicted Dice (per side for whole heads) when there is one."""
    from hipposeg.confidence import predicted_dice_text

    text = predicted_dice_text(row)
    return f"{case}   predicted Dice {text}" if text else case


def case_row(case: str, source: str, labels, affine, names: dict, qc: dict, models: dict) -> dict:
    """One case's volume row as every door writes it: volumes and QC flags (:func:`hipposeg.volumes.volume_row`,
    with ``qc["flags"]``), the networks that made the mask (``models``: :data:`MODEL_KEYS` -> checkpoint or None),
    ``qc``'s scalar columns (``predicted_dice``, eTIV, ...) and, for a whole head, each volume as a fraction of the
    intracranial volume."""
    from hipposeg.volumes import reference_volume_ranges, volume_row

    row = volume_row(case, source, labels, affine, names, reference_volume_ranges(),
                     extra_flags=list(qc.get("flags", [])))
    row.update({k: v for k, v in models.items() if v})
    row.update({k: v for k, v in qc.items() if k != "flags" and isinstance(v, (int, float, str))})
    if "etiv_mm3" in row:
        from hipposeg.fullhead.icv import etiv_columns

        row.update(etiv_columns(row, row))
    return row


#: The row columns that name the networks behind a mask: the 2.5D core and the 3D partner (None: core alone).
MODEL_KEYS = ("model", "model_3d")


def model_columns(core: str | Path | None, partner: str | Path | None = None) -> dict[str, str | None]:
    """The row columns naming the networks behind a mask, from their checkpoint files: ``{"model": core, "model_3d":
    partner or None}``, each an absolute path (every door writes them so; a re-run compares them)."""
    return {key: str(Path(value).resolve()) if value else None for key, value in zip(MODEL_KEYS, (core, partner))}


def model_identity(segmenter) -> dict[str, str | None]:
    """The whole model a segmenter runs, as row columns (:func:`model_columns`; a re-run keeps a finished case only
    when both match)."""
    return model_columns(getattr(segmenter, "checkpoint", None), getattr(segmenter, "partner_checkpoint", None))


def describe_model(identity: dict) -> str:
    core, partner = (identity.get(key) for key in MODEL_KEYS)
    return f"{core or 'unknown'}" + (f" + {partner}" if partner else " alone")


def segment_inputs(inputs: Sequence[str | Path], out_dir: str | Path, segmenter=None, *, overwrite: bool = False,
                   series_uid: str | None = None, mode: str = "auto", qc_png: bool = True,
                   save_uncertainty: bool = False, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> SegmentRun:
    """Segment every input into ``out_dir``, then rebuild its volume tables; never raises for a bad case (it is
    listed in ``failed``). An unusable ``out_dir`` raises one :class:`~hipposeg.errors.OutputFolderError` first."""
    from tqdm import tqdm

    log = log or (lambda line: print(line, file=sys.stderr))
    out_dir = check_output_folder(out_dir)
    if segmenter is None:
        from hipposeg.segmenter import load_segmenter

        segmenter = load_segmenter()
    run = SegmentRun()
    cases, problems = expand_inputs(inputs)
    for line in problems:
        run.failed.append(line)
        log(f"error: {line}")
    options = {"mode": mode, "series_uid": series_uid, "qc_png": qc_png, "save_uncertainty": save_uncertainty}
    for item in tqdm(cases, desc="segment", unit="case", disable=not progress):
        run_case(item, segmenter, out_dir, run, log, overwrite=overwrite, options=options)
    run.tables = rebuild_volume_tables(out_dir)
    return run


def run_case(item: CaseInput, segmenter, out_dir: Path, run: SegmentRun, log: Callable[[str], None], *,
             overwrite: bool, options: dict, files: CaseFiles | None = None) -> None:
    """One case of a batch (:func:`segment_inputs`, the BIDS App): take its lock, decide from the folder's state,
    segment, record in ``run``. ``files``: where the case's outputs go (default: ``<case>_*`` in ``out_dir``)."""
    files = files or CaseFiles.of(out_dir, item.case)
    files.lock.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(files.lock)
    if not lock.acquire():
        line = f"{item.case}: being segmented by another run ({lock.holder() or 'unknown'})"
        run.skipped.append(line)
        log(f"skipped: {line}")
        return
    try:
        t0 = time.perf_counter()
        sha256 = sha256_of(item.path)
        status = case_status(files, sha256)
        if status == "finished" and not overwrite:
            run.already_done.append(item.case)
            earlier = read_row_file(files.row)["row"]
            made_by = {key: earlier.get(key) for key in MODEL_KEYS}
            wanted = model_identity(segmenter)
            if wanted["model"] and made_by != wanted:
                log(f"kept: {item.case}: segmented earlier by another model ({describe_model(made_by)}, not "
                    f"{describe_model(wanted)}); pass --overwrite to redo it")
            if options.get("save_uncertainty") and not files.uncertainty.exists():
                log(f"kept: {item.case}: segmented earlier without --save-uncertainty; pass --overwrite to write "
                    f"its uncertainty map")
            return
        if status == "changed" and not overwrite:
            log(f"redo: {item.case}: the input {item.path} changed since it was segmented (sha256 differs)")
        elif status == "unfinished" and not overwrite:
            log(f"redo: {item.case}: outputs left unfinished by an interrupted run")
        record = segment_one_case(item, segmenter, out_dir, sha256=sha256, files=files, **options)
        run.rows.append(record["row"])
        run.done.append(item.case)
        run.seconds_per_case.append(time.perf_counter() - t0)
    except Exception as exc:  # a bad input, or an unexpected failure, of one case must not stop the others
        line = one_line(exc) if isinstance(exc, HippoSegError) else f"{item.path}: {one_line(exc)}"
        run.failed.append(line)
        log(f"error: {line}")
    finally:
        lock.release()
