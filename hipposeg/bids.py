"""BIDS in, BIDS-Derivatives out: which T1w images a BIDS dataset holds, and what hipposeg writes for each.

A small reader instead of pybids: hipposeg needs only the anatomical T1w images (``sub-<label>[/ses-<label>]/anat/
sub-<label>[_ses-<label>][_acq-..][_ce-..][_rec-..][_run-..]_T1w.nii[.gz]``), which a directory walk finds exactly;
pybids would add SQLAlchemy, pandas and formulaic (about 60 MB) and index every file of a large cohort first.

Derivatives (BIDS 1.9, "derivatives/imaging" and "segmentations"), in ``OUTPUT_DIR``:

* ``dataset_description.json`` — ``DatasetType: derivative``, ``GeneratedBy`` (name, version, model file and sha256);
* ``desc-hipposeg_dseg.tsv`` — the look-up table (index, name, abbreviation, color), valid for every dseg below;
* per image ``sub-X/[ses-Y/]anat/<source entities>_space-T1w_desc-hipposeg_dseg.nii.gz`` in the T1w's own grid,
  ``..._desc-hipposeg_volumes.tsv`` (one row: volumes per label and side, eTIV, ``predicted_dice_left``/``_right``,
  QC flags, ``low_confidence_<side>`` among them) and the QC picture
  ``sub-X/figures/<source entities>_desc-hipposeg_qc.png``; with ``--save-uncertainty`` also the uncertainty map
  ``..._space-T1w_desc-hipposeg_uncertainty.nii.gz`` and its ``.json`` sidecar (:func:`derivative_paths`);
* per subject with T1w images in two or more sessions (unless ``--no-longitudinal``):
  ``sub-X/anat/sub-X_desc-hipposeg_longitudinal.tsv`` (+ ``.json``) and ``sub-X/figures/
  sub-X_desc-hipposeg_longitudinal.png`` (:mod:`hipposeg.longitudinal.bids`);
* ``group``: ``group_volumes.tsv`` / ``group_volumes.json`` (every finished image) and ``group_report.html`` (with
  the rate table and a trajectory plot per subject that has a longitudinal table).
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
                if sessions is not None and "ses" in entities and entities["ses"] not in sessions:
                    continue  # a session filter leaves subjects without sessions alone
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
    """Where the derivatives of ``image`` go (see the module docstring).

    The uncertainty map (``--save-uncertainty``; voxel values: :func:`hipposeg.confidence.uncertainty_sidecar`) is
    ``<stem>_space-T1w_desc-hipposeg_uncertainty.nii.gz`` with its ``.json`` sidecar: BIDS 1.9 has no suffix for a
    per-voxel uncertainty (``_probseg`` holds one class's probability, which this is not), so it gets its own
    suffix, described by the sidecar as BIDS-Derivatives asks of a non-standard map; ``space-T1w`` as the dseg
    (the T1w's own grid); ``desc-hipposeg`` keeps it an output (:func:`is_derivative_name`), and the ending
    ``_uncertainty.nii.gz`` is that of ``hipposeg segment``'s map, which it never takes as an input either
    (:func:`hipposeg.data.writers.is_output_name`)."""
    out_dir = Path(out_dir)
    subject_dir = out_dir / f"sub-{image.subject}"
    anat = (subject_dir / f"ses-{image.session}" if image.session else subject_dir) / "anat"
    return {"seg": anat / f"{image.stem}_space-T1w_desc-{DESC}_dseg.nii.gz",
            "labels": anat / f"{image.stem}_space-T1w_desc-{DESC}_dseg.json",
            "uncertainty": anat / f"{image.stem}_space-T1w_desc-{DESC}_uncertainty.nii.gz",
            "uncertainty_json": anat / f"{image.stem}_space-T1w_desc-{DESC}_uncertainty.json",
            "row": anat / f"{image.stem}_desc-{DESC}_volumes.json",
            "tsv": anat / f"{image.stem}_desc-{DESC}_volumes.tsv",
            "qc": subject_dir / "figures" / f"{image.stem}_desc-{DESC}_qc.png"}


def is_derivative_name(name: str) -> bool:
    """Whether a file name is one hipposeg writes into a derivatives folder (never an input)."""
    return f"_desc-{DESC}_" in name


def dataset_description(*, version: str, model_files: Iterable[str | Path], source_dir: str | Path) -> dict:
    """The derivative's ``dataset_description.json`` content (BIDS 1.9 GeneratedBy, with the model files and their
    sha256 so that a result can be traced to the weights that made it; hashed once per checkpoint version)."""
    from hipposeg.cache import cached_sha256

    models = [{"file": Path(m).name, "sha256": cached_sha256(m)} for m in model_files]
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


# ----------------------------------------------------------------------------------------------- the runs


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/8"`` -> ``(2, 8)``: this process takes images ``2, 10, 18, ...`` of the sorted list (0-based index;
    ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`` fits as is)."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise InputError(None, f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(match[1]), int(match[2])


def case_files(out_dir: str | Path, image: T1wImage):
    """The :class:`~hipposeg.batch.CaseFiles` of one image in the derivatives layout; its lock is a hidden file at
    the top of ``out_dir`` (BIDS validators skip dot files), so a bad image leaves no empty subject folder."""
    from hipposeg.batch import CaseFiles

    paths = derivative_paths(out_dir, image)
    return CaseFiles(seg=paths["seg"], labels=paths["labels"], qc=paths["qc"], row=paths["row"],
                     lock=Path(out_dir) / f".{image.stem}_desc-{DESC}.lock", uncertainty=paths["uncertainty"],
                     uncertainty_json=paths["uncertainty_json"])


def model_files(segmenter) -> list[Path]:
    """The weights files behind a segmenter (core, and the 3D partner where there is one)."""
    files = [getattr(segmenter, "checkpoint", None), getattr(segmenter, "partner_checkpoint", None)]
    return [Path(f) for f in files if f]


def write_dataset_files(out_dir: Path, bids_dir: str | Path, segmenter) -> None:
    """``dataset_description.json`` and ``desc-hipposeg_dseg.tsv`` of the derivative dataset (derived from the
    code and model, so rewritten by every run; atomic)."""
    import hipposeg
    from hipposeg.data.writers import write_json, write_text

    write_json(out_dir / "dataset_description.json",
               dataset_description(version=hipposeg.__version__, model_files=model_files(segmenter),
                                   source_dir=bids_dir), overwrite=True)
    write_text(out_dir / f"desc-{DESC}_dseg.tsv", dseg_tsv(), overwrite=True)


def segment_participants(bids_dir: str | Path, out_dir: str | Path, segmenter=None, *,
                         participant_labels: Sequence[str] | None = None, session_labels: Sequence[str] | None = None,
                         shard: tuple[int, int] | None = None, overwrite: bool = False, progress: bool = True,
                         log=None, longitudinal: bool = True, save_uncertainty: bool = False):
    """The BIDS App's ``participant`` level: segment every selected T1w image (or this shard's share) with the
    whole-head path into BIDS-Derivatives under ``out_dir`` (``save_uncertainty``: with the uncertainty map). Same
    rules as ``hipposeg segment`` (the output folder is the state: finished images are skipped, changed or half-done
    ones redone, one lock per image, a bad image is one line and the rest still run). Returns the
    :class:`~hipposeg.segment.SegmentRun`."""
    import sys

    from hipposeg.batch import read_row_file
    from hipposeg.data.writers import check_output_folder, write_text
    from hipposeg.segment import CaseInput, SegmentRun, run_case

    log = log or (lambda line: print(line, file=sys.stderr))
    images, problems = find_t1w_images(bids_dir, participant_labels, session_labels)
    every_image = images
    if shard is not None:
        images = images[shard[0]::shard[1]]
    out_dir = check_output_folder(out_dir)
    if segmenter is None:
        from hipposeg.segmenter import load_segmenter

        segmenter = load_segmenter()
    write_dataset_files(out_dir, bids_dir, segmenter)
    run = SegmentRun()
    for line in problems:
        run.failed.append(line)
        log(f"error: {line}")
    from tqdm import tqdm

    for image in tqdm(images, desc="participant", unit="image", disable=not progress):
        files = case_files(out_dir, image)
        run_case(CaseInput(image.stem, image.path), segmenter, out_dir, run, log, overwrite=overwrite,
                 options={"mode": "full-head", "save_uncertainty": save_uncertainty}, files=files)
        record = read_row_file(files.row)
        tsv = derivative_paths(out_dir, image)["tsv"]
        if record is not None and files.seg.exists():  # the per-image table, derived from the row file
            text = row_to_tsv(record["row"])
            if not tsv.is_file() or tsv.read_text() != text:
                write_text(tsv, text, overwrite=True)
    if longitudinal:  # subjects with two or more sessions (hipposeg.longitudinal.bids), each in one shard
        longitudinal_subjects(bids_dir, out_dir, every_image, segmenter, run, log, shard=shard, overwrite=overwrite)
    return run


def longitudinal_subjects(bids_dir, out_dir, images, segmenter, run, log, *, shard=None, overwrite=False) -> None:
    """``sub-X_desc-hipposeg_longitudinal.tsv`` and its picture for every subject with T1w images in two or more
    sessions (this shard's share of those subjects); a failure is one line in ``run.failed``."""
    from hipposeg.errors import one_line
    from hipposeg.longitudinal.bids import run_subject, subjects_with_sessions

    subjects = list(subjects_with_sessions(images).items())
    for subject, sessions in subjects[shard[0]::shard[1]] if shard else subjects:
        try:
            status = run_subject(bids_dir, out_dir, subject, sessions, segmenter, overwrite=overwrite)
            log(f"longitudinal: sub-{subject}: {len(sessions)} sessions, {status}")
        except Exception as exc:  # a bad image, or an unexpected failure, of one subject must not stop the others
            line = f"sub-{subject} longitudinal: {one_line(exc)}"
            run.failed.append(line)
            log(f"error: {line}")


def finished_images(out_dir: str | Path) -> list[tuple[dict, Path]]:
    """(volume row, QC picture path) of every finished image under ``out_dir`` (row file and mask present)."""
    from hipposeg.batch import read_row_file

    out = []
    for row_file in sorted(Path(out_dir).glob(f"sub-*/**/anat/*_desc-{DESC}_volumes.json")):
        record = read_row_file(row_file)
        stem = row_file.name[: -len(f"_desc-{DESC}_volumes.json")]
        seg = row_file.with_name(f"{stem}_space-T1w_desc-{DESC}_dseg.nii.gz")
        if record is None or not seg.exists():
            continue
        subject = parse_entities(stem)["sub"]
        out.append((record["row"], Path(out_dir) / f"sub-{subject}" / "figures" / f"{stem}_desc-{DESC}_qc.png"))
    return sorted(out, key=lambda item: str(item[0].get("case", "")))


def write_group_outputs(out_dir: str | Path, *, command: str) -> tuple[Path, ...]:
    """The BIDS App's ``group`` level: ``group_volumes.tsv``/``.json`` from every finished image and the
    self-contained ``group_report.html`` (all derived, so rewritten atomically at every call). Raises
    :class:`~hipposeg.errors.InputError` when no image is finished yet."""
    from hipposeg.data.writers import write_text
    from hipposeg.group_report import model_version, write_group_report

    out_dir = Path(out_dir)
    images = finished_images(out_dir)
    if not images:
        raise InputError(out_dir, "no finished participant outputs to collect; run the participant level first")
    from hipposeg.volumes import volume_table

    rows = [row for row, _ in images]
    columns, table_rows = volume_table(rows)
    tsv = write_text(out_dir / "group_volumes.tsv", row_to_tsv(table_rows, columns), overwrite=True)
    table = write_text(out_dir / "group_volumes.json", json.dumps(table_rows, indent=1) + "\n", overwrite=True)
    from hipposeg.longitudinal.bids import read_subject_tables

    report = write_group_report(rows, out_dir / "group_report.html", command=command, overwrite=True,
                                longitudinal=read_subject_tables(out_dir), model_version=model_version(rows),
                                qc_pictures={str(row.get("case")): qc for row, qc in images if qc.is_file()})
    return tsv, table, report


def run_bids_app(bids_dir: str | Path, out_dir: str | Path, level: str, *, participant_labels=None,
                 session_labels=None, shard: tuple[int, int] | None = None, distributed: bool = False,
                 model: str | Path | None = None, device: str | None = None, overwrite: bool = False,
                 progress: bool = True, command: str = "", longitudinal: bool = True, runtime: str | None = None,
                 int8: bool = True, save_uncertainty: bool = False) -> int:
    """``hipposeg bids``: the ``participant`` or ``group`` level; returns the exit code (2 when an image failed).
    ``save_uncertainty``: ``--save-uncertainty`` (participant level: each image's uncertainty map and sidecar).

    ``model``: ``--model`` (a shipped model's name, a bundle folder or a checkpoint; ``None``: the default);
    ``runtime``: ``--runtime`` (:func:`hipposeg.runtime.choose_runtime`; ``None``: the bundle's, ``auto``); ``int8``:
    ``--no-int8`` makes it false (OpenVINO then runs the core in float32).

    ``distributed``: run under torch's distributed engine (``torchrun --nnodes N --nproc_per_node K -m hipposeg
    bids ... --distributed``): each rank takes a disjoint shard of the images (rank ``r`` of ``W`` takes images
    ``r, r + W, ...``; with ``shard`` too, the shard is split further), on its own GPU when there are GPUs and on
    the CPU otherwise (gloo); rank 0 writes the group table and report once every rank is done. A rank that dies
    leaves its images unfinished; re-running the same command picks them up (finished ones are skipped).
    """
    import sys

    if level not in ("participant", "group"):
        raise InputError(None, f"analysis level {level!r}: expected participant or group")
    out_dir = Path(out_dir)
    if level == "group":
        paths = write_group_outputs(out_dir, command=command)
        print(f"group table: {paths[0]}; report: {paths[2]}")
        return 0
    rank, world = 0, 1
    if distributed:
        rank, world, device = _start_distributed(device)
        lo, n = shard or (0, 1)
        shard = (lo + rank * n, n * world)  # the shard of this rank within the scheduler's shard
    from hipposeg.segmenter import load_segmenter

    segmenter = load_segmenter(model, device=device or "cpu", runtime=runtime, int8=int8)
    run = segment_participants(bids_dir, out_dir, segmenter, participant_labels=participant_labels,
                               session_labels=session_labels, shard=shard, overwrite=overwrite,
                               progress=progress and rank == 0, longitudinal=longitudinal,
                               save_uncertainty=save_uncertainty)
    prefix = f"[rank {rank}/{world}] " if distributed else ""
    print(prefix + run.summary().split("; volume table")[0])
    if run.failed:
        print(prefix + "failed:\n  " + "\n  ".join(run.failed), file=sys.stderr)
    if distributed:
        import torch.distributed as dist

        dist.barrier()  # every rank's images are written
        if rank == 0 and finished_images(out_dir):
            paths = write_group_outputs(out_dir, command=command)
            print(f"group table: {paths[0]}; report: {paths[2]}")
        dist.destroy_process_group()
    return 2 if run.failed else 0


def _start_distributed(device: str | None) -> tuple[int, int, str]:
    """Join torchrun's process group (:func:`hipposeg.training.init_distributed`, the one DDP set-up: NCCL with GPUs,
    else gloo; a week's timeout, since a rank waits at the end for the slowest shard); return (rank, world size,
    this rank's device)."""
    import datetime
    import os

    import torch
    import torch.distributed as dist

    from hipposeg.training import distributed_device, init_distributed

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise InputError(None, "--distributed needs torchrun (or RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set); "
                               "for a scheduler's array job use --shard I/N instead")
    cuda = torch.cuda.is_available() and device != "cpu"
    init_distributed(cuda=cuda, timeout=datetime.timedelta(days=7))
    if not cuda:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    return dist.get_rank(), dist.get_world_size(), str(distributed_device(cuda))
