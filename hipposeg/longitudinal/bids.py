"""The BIDS App's longitudinal step: every subject with T1w images in two or more sessions gets its change and rate.

Written by ``hipposeg bids ... participant`` (unless ``--no-longitudinal``), after the per-image outputs:

* ``sub-X/anat/sub-X_desc-hipposeg_longitudinal.tsv`` — one row per session (the columns of
  ``hipposeg longitudinal``'s ``longitudinal.csv``; ``n/a`` where a value is unknown) and ``..._longitudinal.json``
  (the same with the alignment and timings);
* ``sub-X/figures/sub-X_desc-hipposeg_longitudinal.png`` — the QC picture (same slices of every session, trajectory).

The ``group`` level reads every subject's table back (:func:`read_subject_tables`) for the group report's rate table
and trajectory plots.

One T1w image per session (the first in name order, e.g. ``run-1``), sessions in label order. Times in years from the
first session: ``sub-X/sub-X_sessions.tsv`` ``acq_time``, else each session's ``scans.tsv`` ``acq_time`` of that
T1w; when a time is missing, none is used (the changes are then against the first session in label order and no rate
is given). A re-run keeps a subject's table when the same images (by content) made it; ``--overwrite`` redoes it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Sequence

DESC = "hipposeg"


def subjects_with_sessions(images: Sequence) -> dict[str, list]:
    """subject -> its T1w images, one per session, for the subjects with two or more sessions (``T1wImage`` of
    :mod:`hipposeg.bids`)."""
    by_subject: dict[str, dict[str, object]] = {}
    for image in images:
        if image.session:
            by_subject.setdefault(image.subject, {}).setdefault(image.session, image)
    return {sub: [sessions[s] for s in sorted(sessions)] for sub, sessions in sorted(by_subject.items())
            if len(sessions) >= 2}


def _acq_times(tsv: Path, key: str) -> dict[str, str]:
    if not tsv.is_file():
        return {}
    with open(tsv, newline="") as handle:
        return {row.get(key, ""): row.get("acq_time", "") for row in csv.DictReader(handle, delimiter="\t")}


def session_times(bids_dir: str | Path, subject: str, images: Sequence) -> list[float] | None:
    """Years since the first session from ``sessions.tsv`` (else ``scans.tsv``) ``acq_time``
    (:func:`hipposeg.longitudinal.acquisition_times.parse_acquisition_time`); None if any is missing."""
    from hipposeg.longitudinal.acquisition_times import parse_acquisition_time, years_since_first

    root = Path(bids_dir) / f"sub-{subject}"
    sessions = _acq_times(root / f"sub-{subject}_sessions.tsv", "session_id")
    stamps = []
    for image in images:
        stamp = parse_acquisition_time(sessions.get(f"ses-{image.session}"))
        if stamp is None:
            scans = _acq_times(root / f"ses-{image.session}" / f"sub-{subject}_ses-{image.session}_scans.tsv",
                               "filename")
            stamp = parse_acquisition_time(scans.get(f"anat/{image.path.name}"))
        if stamp is None:
            return None
        stamps.append(stamp)
    return years_since_first(stamps)


def subject_paths(out_dir: str | Path, subject: str) -> dict[str, Path]:
    subject_dir = Path(out_dir) / f"sub-{subject}"
    return {"tsv": subject_dir / "anat" / f"sub-{subject}_desc-{DESC}_longitudinal.tsv",
            "json": subject_dir / "anat" / f"sub-{subject}_desc-{DESC}_longitudinal.json",
            "png": subject_dir / "figures" / f"sub-{subject}_desc-{DESC}_longitudinal.png",
            "work": Path(out_dir) / f".sub-{subject}_desc-{DESC}_longitudinal"}


def run_subject(bids_dir: str | Path, out_dir: str | Path, subject: str, images: Sequence, segmenter, *,
                overwrite: bool = False) -> str:
    """The longitudinal outputs of one subject (see the module text); returns "done" or "already done"."""
    from hipposeg.bids import row_to_tsv
    from hipposeg.data.manifest import sha256_of
    from hipposeg.data.writers import write_text
    from hipposeg.longitudinal.pipeline import TABLE_COLUMNS, run_longitudinal

    paths = subject_paths(out_dir, subject)
    inputs = {str(image.path): sha256_of(image.path) for image in images}
    if paths["tsv"].is_file() and paths["json"].is_file() and not overwrite:
        if json.loads(paths["json"].read_text()).get("inputs") == inputs:
            return "already done"
    times = session_times(bids_dir, subject, images)
    shutil.rmtree(paths["work"], ignore_errors=True)
    try:
        result = run_longitudinal([image.path for image in images], paths["work"], segmenter, times=times,
                                  overwrite=True, masks=False)
        summary = json.loads((paths["work"] / "longitudinal.json").read_text())
        rows = [{**row, "session": next(im.session for im in images if str(im.path) == row["input_path"])}
                for row in result.rows]
        paths["png"].parent.mkdir(parents=True, exist_ok=True)
        if (paths["work"] / "longitudinal_qc.png").is_file():
            (paths["work"] / "longitudinal_qc.png").replace(paths["png"])
        write_text(paths["tsv"], row_to_tsv(rows, ["session", *TABLE_COLUMNS]), overwrite=True)
        write_text(paths["json"], json.dumps({**summary, "rows": rows, "inputs": inputs}, indent=1) + "\n",
                   overwrite=True)
    finally:
        shutil.rmtree(paths["work"], ignore_errors=True)
    return "done"


def read_subject_tables(out_dir: str | Path) -> dict[str, list[dict]]:
    """subject -> the rows of its ``sub-X_desc-hipposeg_longitudinal.tsv`` (time order, as written; ``n/a`` -> None),
    for every subject of ``out_dir`` that has one."""
    tables = {}
    for tsv in sorted(Path(out_dir).glob(f"sub-*/anat/sub-*_desc-{DESC}_longitudinal.tsv")):
        subject = tsv.name.split("_", 1)[0][len("sub-"):]
        with open(tsv, newline="") as handle:
            rows = [{k: (None if v == "n/a" else v) for k, v in row.items()}
                    for row in csv.DictReader(handle, delimiter="\t")]
        if rows:
            tables[subject] = rows
    return tables
