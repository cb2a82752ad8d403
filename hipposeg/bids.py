"""BIDS in, BIDS-Derivatives out: which T1w images a BIDS dataset holds, and what hipposeg writes for each.

A small reader instead of pybids: hipposeg needs only the anatomical T1w images (``sub-<label>[/ses-<label>]/anat/
sub-<label>[_ses-<label>][_acq-..][_ce-..][_rec-..][_run-..]_T1w.nii[.gz]``), which a directory walk finds exactly;
pybids would add SQLAlchemy, pandas and formulaic (about 60 MB) and index every file of a large cohort first.

Derivatives (BIDS 1.9, "derivatives/imaging" and "segmentations"), in ``OUTPUT_DIR``:

* ``dataset_description.json`` — ``DatasetType: derivative``, ``GeneratedBy`` (name, version, model file and sha256);
* ``desc-hipposeg_dseg.tsv`` — the look-up table (index, name, abbreviation, color), valid for every dseg below;
* per image ``sub-X/[ses-Y/]anat/<source entities>_space-T1w_desc-hipposeg_dseg.nii.gz`` in the T1w's own grid,
  ``..._desc-hipposeg_volumes.tsv`` (one row: volumes per label and side, eTIV, QC flags) and the QC picture
  ``sub-X/figures/<source entities>_desc-hipposeg_qc.png``;
* ``group``: ``group_volumes.tsv`` / ``group_volumes.json`` (every finished image) and ``group_report.html``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from hipposeg.errors import InputError

# BIDS entity order of the anatomical file names we read and write (a subset of the specification's table)
ENTITY_ORDER = ("sub", "ses", "acq", "ce", "rec", "run")
_T1W = re.compile(r"^(?P<stem>sub-[A-Za-z0-9]+(?:_[a-z]+-[A-Za-z0-9]+)*)_T1w\.nii(?:\.gz)?$")
DESC = "hipposeg"

# the whole-head label map: index, name, abbreviation, colour (#rrggbb)
DSEG_LABELS = (
    (1, "left_anterior", "L-HH", "#e6194b"),  # left hippocampal head
    (2, "left_posterior", "L-HB", "#f58231"),  # left hippocampal body and tail
    (3, "right_anterior", "R-HH", "#4363d8"),
    (4, "right_posterior", "R-HB", "#42d4f4"),
)


@dataclass(frozen=True)
class T1wImage:
    """One T1w image of a BIDS dataset and its entities."""

    path: Path
    stem: str  # the source name without ``_T1w.nii[.gz]``, e.g. ``sub-01_ses-2_run-1``
    entities: dict = field(hash=False, compare=False)

    @property
    def subject(self) -> str:
        return self.entities["sub"]

    @property
    def session(self) -> str | None:
        return self.entities.get("ses")


def parse_entities(stem: str) -> dict[str, str]:
    """``sub-01_ses-2_run-1`` -> ``{"sub": "01", "ses": "2", "run": "1"}``."""
    return dict(part.split("-", 1) for part in stem.split("_"))


def _labels(values: Sequence[str] | None, prefix: str) -> list[str] | None:
    """``["01", "sub-02"]`` -> ``["01", "02"]`` (BIDS Apps accept both spellings)."""
    if not values:
        return None
    return [v[len(prefix) + 1:] if v.startswith(prefix + "-") else v for v in values]


def find_t1w_images(bids_dir: str | Path, participant_labels: Sequence[str] | None = None,
                    session_labels: Sequence[str] | None = None) -> tuple[list[T1wImage], list[str]]:
    """The T1w images of a BIDS dataset, sorted, and one line per problem (a requested participant or session
    that has no T1w image). A folder without ``dataset_description.json`` is not a BIDS dataset
    (:class:`~hipposeg.errors.InputError`). ``derivatives/`` and other non-``sub-`` folders are never read."""
    root = Path(bids_dir)
    if not root.is_dir():
        raise InputError(root, "no such BIDS folder")
    if not (root / "dataset_description.json").is_file():
        raise InputError(root, "not a BIDS dataset (no dataset_description.json)")
    subjects, sessions = _labels(participant_labels, "sub"), _labels(session_labels, "ses")
    images, problems = [], []
    for sub_dir in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        label = sub_dir.name[4:]
        if subjects is not None and label not in subjects:
            continue
        anat_dirs = [sub_dir / "anat"] + sorted(p / "anat" for p in sub_dir.glob("ses-*") if p.is_dir())
        for anat in anat_dirs:
            if not anat.is_dir():
                continue
            for path in sorted(anat.iterdir()):
                match = _T1W.match(path.name)
                if not match or path.name.startswith("."):
                    continue
                entities = parse_entities(match["stem"])
                if entities.get("sub") != label:
                    problems.append(f"{path}: subject entity does not match its folder {sub_dir.name}")
                    continue
                if sessions is not None and entities.get("ses") not in sessions:
                    continue
                images.append(T1wImage(path, match["stem"], entities))
    found_subjects = {i.subject for i in images}
    for label in subjects or []:
        if label not in found_subjects:
            problems.append(f"{root / ('sub-' + label)}: no T1w image for participant {label}")
    for label in sessions or []:
        if not any(i.session == label for i in images):
            problems.append(f"{root}: no T1w image for session {label}")
    return images, problems


def derivative_paths(out_dir: str | Path, image: T1wImage) -> dict[str, Path]:
    """Where the derivatives of ``image`` go (see the module docstring)."""
    out_dir = Path(out_dir)
    subject_dir = out_dir / f"sub-{image.subject}"
    anat = (subject_dir / f"ses-{image.session}" if image.session else subject_dir) / "anat"
    return {"seg": anat / f"{image.stem}_space-T1w_desc-{DESC}_dseg.nii.gz",
            "labels": anat / f"{image.stem}_space-T1w_desc-{DESC}_dseg.json",
            "row": anat / f"{image.stem}_desc-{DESC}_volumes.json",
            "tsv": anat / f"{image.stem}_desc-{DESC}_volumes.tsv",
            "qc": subject_dir / "figures" / f"{image.stem}_desc-{DESC}_qc.png"}


def is_derivative_name(name: str) -> bool:
    """Whether a file name is one hipposeg writes into a derivatives folder (never an input)."""
    return f"_desc-{DESC}_" in name


def dataset_description(*, version: str, model_files: Iterable[str | Path], source_dir: str | Path) -> dict:
    """The derivative's ``dataset_description.json`` content (BIDS 1.9 GeneratedBy, with the model files and their
    sha256 so that a result can be traced to the weights that made it)."""
    from hipposeg.data.manifest import sha256_of

    models = [{"file": Path(m).name, "sha256": sha256_of(m)} for m in model_files]
    return {"Name": "hipposeg hippocampus segmentation", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "hipposeg", "Version": version,
                             "Description": "hippocampus head/body per side, volumes and intracranial volume",
                             "CodeURL": "https://github.com/hipposeg/hipposeg", "Models": models}],
            "SourceDatasets": [{"URL": Path(source_dir).resolve().as_uri()}]}


def dseg_tsv() -> str:
    """The look-up table of the whole-head label map, as BIDS ``_dseg.tsv`` text."""
    lines = ["index\tname\tabbreviation\tcolor"]
    lines += [f"{i}\t{name}\t{abbr}\t{color}" for i, name, abbr, color in DSEG_LABELS]
    return "\n".join(lines) + "\n"


def row_to_tsv(row: dict, columns: Sequence[str] | None = None) -> str:
    """One volume row (or several, a list) as a TSV with a header line; lists become ``;``-joined text."""
    rows = row if isinstance(row, list) else [row]
    cols = list(columns or [])
    for r in rows:
        cols += [c for c in r if c not in cols]

    def cell(value) -> str:
        if value is None:
            return "n/a"  # the BIDS spelling of a missing value
        if isinstance(value, (list, tuple)):
            return "; ".join(str(v) for v in value)
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value).replace("\t", " ").replace("\n", " ")

    return "\n".join(["\t".join(cols)] + ["\t".join(cell(r.get(c)) for c in cols) for r in rows]) + "\n"


def write_json(path: Path, content: dict, overwrite: bool = True) -> Path:
    from hipposeg.data.writers import write_text

    return write_text(path, json.dumps(content, indent=2) + "\n", overwrite=overwrite)
