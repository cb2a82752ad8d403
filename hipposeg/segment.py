"""``hipposeg segment``: masks, volumes and QC pictures for many scans, safe on bad input.

Per case: read (NIfTI file or DICOM series folder) -> check -> segment (crop model, or the whole-head path)
-> write ``<case>_seg.nii.gz`` and ``<case>_qc.png`` atomically; for the run: ``volumes.csv``/``volumes.json``.
A bad case is reported in one line and the others still run; an existing output is never replaced without
``overwrite`` (the case is skipped and reported).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hipposeg.data.readers import Image, case_name, check_volume, is_nifti, read_image
from hipposeg.data.writers import check_writable, write_nifti, write_text
from hipposeg.errors import HippoSegError, InputError, OutputExistsError

CROP_LABELS = {0: "background", 1: "anterior", 2: "posterior"}


@dataclass
class CaseInput:
    case: str
    path: Path


@dataclass
class SegmentRun:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one line each: "<path>: <problem>"
    skipped: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    seconds_per_case: list[float] = field(default_factory=list)
    tables: tuple = ()

    def raise_if_failed(self) -> "SegmentRun":
        """For the bundle door: a run with failed cases ends in an error listing them."""
        if self.failed:
            raise InputError(None, f"{len(self.failed)} case(s) failed: " + "; ".join(self.failed))
        return self

    def summary(self) -> str:
        per_case = f", {np.median(self.seconds_per_case):.2f} s per case (median)" if self.seconds_per_case else ""
        text = f"segmented {len(self.done)} case(s), {len(self.failed)} failed, {len(self.skipped)} skipped{per_case}"
        if self.tables:
            text += f"; volume table: {self.tables[0]}"
        return text


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[CaseInput], list[str]]:
    """Files and folders -> cases. A folder holding NIfTI files gives one case per file; any other folder is
    taken as a DICOM series folder. Returns (cases, problems) — a missing path is a problem, not an abort."""
    cases, problems, seen = [], [], {}
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            problems.append(f"{path}: no such file or folder")
            continue
        found = [path] if path.is_file() else sorted(p for p in path.iterdir() if is_nifti(p) and not p.name.startswith("."))
        if path.is_dir() and not found:
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


def _outputs(out_dir: Path, case: str) -> dict[str, Path]:
    return {"seg": out_dir / f"{case}_seg.nii.gz", "qc": out_dir / f"{case}_qc.png",
            "labels": out_dir / f"{case}_seg.json"}


def segment_case(image: Image, segmenter, mode: str = "auto") -> tuple[np.ndarray, dict, dict]:
    """(labels in the input grid, label names, extra QC) for one checked image."""
    from hipposeg.fullhead.pipeline import is_full_head, segment_full_head

    full = mode == "full-head" or (mode == "auto" and is_full_head(image))
    if not full:
        return segmenter.segment(image).labels, getattr(segmenter, "label_names", CROP_LABELS), {}
    result = segment_full_head(image, segmenter.predict_probabilities)
    return result.labels, {0: "background", **result.label_names}, result.qc


def segment_inputs(inputs: Sequence[str | Path], out_dir: str | Path, segmenter=None, *, overwrite: bool = False,
                   series_uid: str | None = None, mode: str = "auto", qc_png: bool = True,
                   progress: bool = True, log: Callable[[str], None] | None = None) -> SegmentRun:
    """Segment every input into ``out_dir``; never raises for a bad case (it is listed in ``failed``)."""
    from tqdm import tqdm

    from hipposeg.report import reference_volume_ranges, save_qc_png, volume_row, write_volume_tables

    log = log or (lambda line: print(line, file=sys.stderr))
    out_dir = Path(out_dir)
    for table in ("volumes.csv", "volumes.json"):
        check_writable(out_dir / table, overwrite)
    if segmenter is None:
        from hipposeg.segmenter import load_segmenter

        segmenter = load_segmenter()
    run = SegmentRun()
    cases, problems = expand_inputs(inputs)
    for line in problems:
        run.failed.append(line)
        log(f"error: {line}")
    ranges = reference_volume_ranges()
    for item in tqdm(cases, desc="segment", unit="case", disable=not progress):
        outputs = _outputs(out_dir, item.case)
        if not qc_png:
            outputs.pop("qc")
        written: list = []
        try:
            t0 = time.perf_counter()
            for path in outputs.values():
                check_writable(path, overwrite)
            image = check_volume(read_image(item.path, series_uid=series_uid))
            labels, names, qc = segment_case(image, segmenter, mode)
            flags = list(qc.get("flags", []))
            row = volume_row(item.case, str(item.path), labels, image.affine, names, ranges, extra_flags=flags)
            if getattr(segmenter, "checkpoint", None):  # which model made the mask (two are shipped)
                row["model"] = str(segmenter.checkpoint)
            row.update({k: v for k, v in qc.items() if k != "flags" and isinstance(v, (int, float, str))})
            written.append(write_nifti(outputs["seg"], labels.astype(np.uint8), image.affine, overwrite=overwrite))
            written.append(write_text(outputs["labels"], json.dumps({str(k): v for k, v in names.items()}, indent=1)
                                      + "\n", overwrite=overwrite))
            if qc_png:
                written.append(save_qc_png(image.array, labels, image.affine, outputs["qc"], names,
                                           title=item.case, overwrite=overwrite))
            run.rows.append(row)
            run.done.append(item.case)
            run.seconds_per_case.append(time.perf_counter() - t0)
            written = []
        except OutputExistsError as exc:
            run.skipped.append(str(exc))
            log(f"skipped: {exc}")
        except HippoSegError as exc:
            run.failed.append(str(exc))
            log(f"error: {exc}")
        except Exception as exc:  # an unexpected failure of one case must not stop the others
            line = f"{item.path}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            run.failed.append(line)
            log(f"error: {line}")
        finally:
            for path in written:  # a case that failed half-way leaves nothing behind
                Path(path).unlink(missing_ok=True)
    if run.rows:
        run.tables = write_volume_tables(run.rows, out_dir, overwrite=overwrite)
    return run
