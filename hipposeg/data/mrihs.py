"""Import the Kaggle "mrihs" dataset (HarP hippocampus labels on ADNI scans, as JPEG slices) into NIfTI.

    hipposeg import-mrihs KAGGLE_ROOT -o OUT_DIR [--spacing X Y Z] [--overwrite]

Source layout (``KAGGLE_ROOT`` is the unzipped Kaggle archive)::

    original/100/<subject>/<subject>_NNN.jpg                     training images ("100" set)
    original/35/<subject>/<subject>_NNN.jpg                      test images ("35" set)
    label/100label/<subject>/<name5>_L/<name5>_L_NNN.jpg         left hippocampus masks
    label/100label/<subject>/<name5>_R/<name5>_R_NNN.jpg         right hippocampus masks
    label/35label/<subject>/...                                  the same for the test set

``<subject>`` is ``ADNI_<site>_S_<rid>_<imageID>_<space>`` (``<space>`` is ``ACPC`` or ``tal_noscale``) and
``<name5>`` is its first five underscore-separated parts (the mask folders carry no space suffix).
``NNN`` is the slice number (001-189 in the real data). Each slice is 233 rows x 197 columns, 8 bit;
3-channel JPEGs are converted to grayscale (Pillow mode ``"L"``). Masks are lossy JPEGs: a voxel belongs to a
side when its mask value is > 127.

Output (MSD layout, every file written atomically through :mod:`hipposeg.data.writers`)::

    imagesTr/<subject>.nii.gz  labelsTr/<subject>.nii.gz         the "100" set (split "train")
    imagesTs/<subject>.nii.gz  labelsTs/<subject>.nii.gz         the "35" set (split "test")
    dataset.json                                                 MSD description (labels, training/test lists)
    manifest.json                                                the case list read by hipposeg.data.manifest

Images and labels are uint8. Labels: 0 background, 1 left hippocampus (``_L`` masks), 2 right (``_R`` masks).
Where an ``_L`` and an ``_R`` mask both cover a voxel, **left wins** (label 1); the report counts such voxels
per subject (:attr:`MrihsImportReport.overlaps`). The real data are not known to have any.

Geometry -- INFERRED, NOT READ FROM ANY HEADER (JPEGs carry none)
-----------------------------------------------------------------
Voxel index ``(i, j, k)`` = (JPEG column, JPEG row, slice number - first slice number), so a volume is
``columns x rows x slices`` (197 x 233 x 189 for the real data) and each PIL slice (rows, columns) is transposed.
The affine is ``diag(spacing)`` with origin 0, i.e. an RAS+ volume in which:

* **+i (column) points from patient left to patient right**: the ``_L`` masks sit in the low columns
  (about 55-85) and the ``_R`` masks in the high ones (about 110-140) in published figures of this data set;
  this is neurological display order, not the radiological one;
* **+j (row) points posterior to anterior**: figures show the cerebellum/occipital lobe in the top rows and the
  orbits in the bottom rows;
* **+k (slice number) points inferior to superior**: slice 056 shows both hippocampi and the midbrain.

This agrees with the scans being resampled to the 1 mm MNI152 (ICBM 2009) grid, 197 x 233 x 189, whose x index
runs left to right, y posterior to anterior and z inferior to superior. The spacing (default 1 mm isotropic)
and the origin are not stated by any source. Every sign above rests on visual evidence summarised in the project
note on the Kaggle layout, so the importer also checks each subject: a subject whose left mask lies at higher
columns than its right mask gets a warning in the report.

Problems with one subject never stop the import: the subject is skipped with a one-line reason (missing label
folder or side folder, different slice numbers in the image and the masks, slice numbers that are not
contiguous, unreadable or truncated JPEGs, slices of different sizes, outputs that already exist).
The index files ``dataset.json`` and ``manifest.json`` describe every complete case in ``OUT_DIR`` (imported now
or by an earlier run); they are rewritten when, and only when, their content changes -- even without
``overwrite``, since they are indexes of the folder rather than data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hipposeg.data.manifest import assign_folds, sha256_of
from hipposeg.data.writers import write_nifti, write_text
from hipposeg.errors import InputError

#: source set folder -> (split, label set folder, MSD image folder, MSD label folder)
SETS = {
    "100": ("train", "100label", "imagesTr", "labelsTr"),
    "35": ("test", "35label", "imagesTs", "labelsTs"),
}
LABELS = {"0": "background", "1": "left", "2": "right"}
MASK_THRESHOLD = 127  # a mask voxel is set when its JPEG value is > MASK_THRESHOLD
SIDES = (("L", 1), ("R", 2))
LICENCE = (
    "ADNI Data Use Agreement: users must hold their own ADNI access and download the data themselves; "
    "redistribution is not allowed."
)
_MAX_LISTED = 5


@dataclass
class MrihsImportReport:
    """What :func:`import_mrihs` did."""

    imported: list[str] = field(default_factory=list)  # subjects written by this run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (subject, one-line reason)
    overlaps: dict[str, int] = field(default_factory=dict)  # subject -> voxels in both L and R masks (set to 1)
    warnings: list[str] = field(default_factory=list)  # non-fatal oddities (orientation check, stray files...)
    listed: int = 0  # cases in manifest.json (imported now or earlier)
    manifest_path: Path | None = None
    dataset_json_path: Path | None = None

    def summary(self) -> str:
        return (
            f"imported {len(self.imported)} subject(s), skipped {len(self.skipped)}; "
            f"{self.listed} case(s) listed in {self.manifest_path}"
        )


class _SubjectProblem(Exception):
    """A reason to skip one subject."""


def _numbered_files(folder: Path, prefix: str, warnings: list[str]) -> dict[int, Path]:
    """``{slice number: path}`` of the ``<prefix>_NNN.jpg`` files in ``folder``."""
    pattern = re.compile(re.escape(prefix) + r"_(\d+)\.jpe?g", re.IGNORECASE)
    found: dict[int, Path] = {}
    stray = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        match = pattern.fullmatch(path.name)
        if not match or not path.is_file():
            if path.suffix.lower() in (".jpg", ".jpeg"):
                stray.append(path.name)
            continue
        number = int(match.group(1))
        if number in found:
            raise _SubjectProblem(f"two files for slice {number} in {folder}: {found[number].name}, {path.name}")
        found[number] = path
    if stray:
        listed = ", ".join(stray[:_MAX_LISTED]) + (" ..." if len(stray) > _MAX_LISTED else "")
        warnings.append(f"{folder}: ignored {len(stray)} JPEG(s) not named {prefix}_NNN.jpg: {listed}")
    return found


def _list_numbers(numbers) -> str:
    numbers = sorted(numbers)
    text = ", ".join(f"{n:03d}" for n in numbers[:_MAX_LISTED])
    return text + (f" ... ({len(numbers)} in all)" if len(numbers) > _MAX_LISTED else "")


def _check_contiguous(numbers: list[int], what: str) -> None:
    missing = set(range(min(numbers), max(numbers) + 1)) - set(numbers)
    if missing:
        raise _SubjectProblem(f"{what} slice numbers are not contiguous (missing {_list_numbers(missing)})")


def _read_gray(path: Path) -> np.ndarray:
    """One JPEG slice as a (rows, columns) uint8 array; 3-channel files are converted to grayscale."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            if im.mode != "L":
                im = im.convert("L")
            return np.array(im, dtype=np.uint8)
    except Exception as exc:  # Pillow raises many kinds (OSError, SyntaxError, ValueError...) for bad files
        text = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
        raise _SubjectProblem(f"cannot read {path} ({detail})") from None


def _stack(files: dict[int, Path], numbers: list[int], shape: tuple[int, int] | None, what: str):
    """Read the slices ``numbers`` and stack them to (rows, columns, slices); check every slice has ``shape``."""
    slices = []
    for number in numbers:
        arr = _read_gray(files[number])
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise _SubjectProblem(
                f"inconsistent slice sizes: {files[number].name} is {arr.shape[0]}x{arr.shape[1]} (rows x columns), "
                f"other {what} slices are {shape[0]}x{shape[1]}"
            )
        slices.append(arr)
    return np.stack(slices, axis=-1), shape


def _load_subject(image_dir: Path, label_dir: Path, warnings: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """(image, label, overlap voxels) of one subject as (columns, rows, slices) arrays; raises _SubjectProblem."""
    subject = image_dir.name
    parts = subject.split("_")
    if len(parts) < 6:
        raise _SubjectProblem("folder name is not of the form ADNI_<site>_S_<rid>_<imageID>_<space>")
    name5 = "_".join(parts[:5])

    image_files = _numbered_files(image_dir, subject, warnings)
    if not image_files:
        raise _SubjectProblem(f"no {subject}_NNN.jpg slices in {image_dir}")
    numbers = sorted(image_files)
    _check_contiguous(numbers, "image")

    if not label_dir.is_dir():
        raise _SubjectProblem(f"no label folder {label_dir}")
    mask_files = {}
    for side, _ in SIDES:
        side_dir = label_dir / f"{name5}_{side}"
        if not side_dir.is_dir():
            present = sorted(p.name for p in label_dir.iterdir() if not p.name.startswith("."))
            raise _SubjectProblem(
                f"no _{side} mask folder {side_dir} (the label folder holds: {', '.join(present) or 'nothing'})"
            )
        files = _numbered_files(side_dir, f"{name5}_{side}", warnings)
        if set(files) != set(numbers):
            extra, missing = set(files) - set(numbers), set(numbers) - set(files)
            detail = []
            if missing:
                detail.append(f"no mask for {_list_numbers(missing)}")
            if extra:
                detail.append(f"masks without an image slice: {_list_numbers(extra)}")
            raise _SubjectProblem(
                f"unequal slices: image has {len(numbers)}, _{side} masks have {len(files)} ({'; '.join(detail)})"
            )
        mask_files[side] = files

    image, shape = _stack(image_files, numbers, None, "image")
    label = np.zeros(image.shape, dtype=np.uint8)
    masks = {}
    for side, value in SIDES:
        stacked, _ = _stack(mask_files[side], numbers, shape, "image and mask")
        masks[side] = stacked > MASK_THRESHOLD
    both = masks["L"] & masks["R"]
    label[masks["R"]] = 2
    label[masks["L"]] = 1  # left wins where both are set

    if masks["L"].any() and masks["R"].any():
        col_l = np.nonzero(masks["L"])[1].mean()
        col_r = np.nonzero(masks["R"])[1].mean()
        if col_l > col_r:
            warnings.append(
                f"{subject}: left mask lies at higher columns ({col_l:.0f}) than right mask ({col_r:.0f}); "
                "the left-right orientation assumed by the importer may not hold for this subject"
            )
    elif not masks["L"].any() and not masks["R"].any():
        warnings.append(f"{subject}: both masks are empty")

    # (rows, columns, slices) -> (columns, rows, slices): i = column, j = row, k = slice
    image = np.ascontiguousarray(image.transpose(1, 0, 2))
    label = np.ascontiguousarray(label.transpose(1, 0, 2))
    return image, label, int(both.sum())


def _affine(spacing) -> np.ndarray:
    return np.diag([float(spacing[0]), float(spacing[1]), float(spacing[2]), 1.0])


def _write_index(path: Path, text: str) -> None:
    """Write an index file only when its content changes (so a no-op rerun leaves it untouched)."""
    if path.is_file() and path.read_text() == text:
        return
    write_text(path, text, overwrite=True)


def _dataset_json(cases: list[dict]) -> str:
    spec = {
        "name": "mrihs",
        "description": (
            "Kaggle sabermalek/mrihs (HarP hippocampus labels on ADNI T1 scans), JPEG slices stacked to volumes "
            "by hipposeg import-mrihs. Orientation (RAS: column left->right, row posterior->anterior, slice "
            "inferior->superior) and spacing are inferred, not read from headers."
        ),
        "reference": "https://www.kaggle.com/datasets/sabermalek/mrihs (DOI 10.34740/KAGGLE/DS/400588); "
        "EADC-ADNI Harmonized Hippocampal Protocol (Boccardi et al.)",
        "licence": LICENCE,
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": dict(LABELS),
        "label_overlap_policy": "left wins where _L and _R masks overlap",
        "numTraining": sum(c["split"] == "train" for c in cases),
        "numTest": sum(c["split"] == "test" for c in cases),
        "training": [{"image": f"./{c['image']}", "label": f"./{c['label']}"} for c in cases if c["split"] == "train"],
        "test": [{"image": f"./{c['image']}", "label": f"./{c['label']}"} for c in cases if c["split"] == "test"],
    }
    return json.dumps(spec, indent=1) + "\n"


def import_mrihs(
    kaggle_root: str | Path,
    out_dir: str | Path,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    overwrite: bool = False,
    progress: bool = True,
    n_folds: int = 5,
    fold_seed: int = 20240725,
) -> MrihsImportReport:
    """Convert the Kaggle mrihs JPEG slices under ``kaggle_root`` to NIfTI volumes in MSD layout in ``out_dir``.

    Subjects with problems are skipped and reported (see the module docstring); a subject with an existing output
    is skipped unless ``overwrite``. ``manifest.json`` lists every complete case in ``out_dir`` with its split,
    its fold (training cases only: :func:`hipposeg.data.manifest.assign_folds` over the listed training ids with
    ``n_folds`` and ``fold_seed``) and sha256 checksums.

    Raises :class:`InputError` when ``kaggle_root`` or its ``original/`` folder is missing, or ``spacing`` is bad.
    """
    from tqdm import tqdm

    kaggle_root, out_dir = Path(kaggle_root), Path(out_dir)
    try:
        spacing = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(None, f"spacing must be three positive numbers, got {spacing!r}") from None
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(None, f"spacing must be three positive numbers, got {spacing!r}")
    if int(n_folds) < 1:
        raise InputError(None, f"n_folds must be at least 1, got {n_folds!r}")
    if not kaggle_root.is_dir():
        raise InputError(kaggle_root, "no such folder (expected the unzipped Kaggle mrihs archive)")
    original = kaggle_root / "original"
    if not original.is_dir():
        raise InputError(original, "no such folder: the Kaggle mrihs root must hold original/100 and original/35")
    present_sets = [s for s in SETS if (original / s).is_dir()]
    if not present_sets:
        raise InputError(original, "holds neither 100/ nor 35/ (the training and test subject folders)")

    report = MrihsImportReport()
    for set_name in SETS:
        if set_name not in present_sets:
            report.warnings.append(f"{original / set_name}: no such folder, no {SETS[set_name][0]} subjects")

    jobs = []  # (subject folder, set name)
    for set_name in present_sets:
        for path in sorted((original / set_name).iterdir(), key=lambda p: p.name):
            if path.is_dir() and not path.name.startswith("."):
                jobs.append((path, set_name))

    affine = _affine(spacing)
    cases: list[dict] = []
    seen: dict[str, str] = {}
    for image_dir, set_name in tqdm(jobs, desc="import mrihs", unit="subject", disable=not progress):
        subject = image_dir.name
        split, label_set, image_sub, label_sub = SETS[set_name]
        if subject in seen:
            report.skipped.append((subject, f"also in original/{seen[subject]}; case ids must be unique"))
            continue
        seen[subject] = set_name
        image_rel, label_rel = f"{image_sub}/{subject}.nii.gz", f"{label_sub}/{subject}.nii.gz"
        image_out, label_out = out_dir / image_rel, out_dir / label_rel
        case = {"id": subject, "split": split, "image": image_rel, "label": label_rel}

        existing = [rel for rel, path in ((image_rel, image_out), (label_rel, label_out)) if path.exists()]
        if existing and not overwrite:
            complete = len(existing) == 2
            partial = "" if complete else " (the other output is missing: the case is not listed)"
            report.skipped.append((subject, f"{' and '.join(existing)} exist{'s' if len(existing) == 1 else ''}"
                                            f"{partial}; pass --overwrite to replace"))
            if complete:
                cases.append(case)
            continue

        try:
            image, label, overlap = _load_subject(image_dir, kaggle_root / "label" / label_set / subject,
                                                   report.warnings)
        except _SubjectProblem as problem:
            report.skipped.append((subject, str(problem)))
            continue
        except OSError as exc:  # a source folder we cannot list (permissions, vanished while reading...)
            report.skipped.append((subject, f"cannot read the source folders ({type(exc).__name__}: {exc})"))
            continue
        if overlap:
            report.overlaps[subject] = overlap
        write_nifti(image_out, image, affine, overwrite=overwrite)
        write_nifti(label_out, label, affine, overwrite=overwrite)
        report.imported.append(subject)
        cases.append(case)

    train_ids = [c["id"] for c in cases if c["split"] == "train"]
    folds = assign_folds(train_ids, n_folds, fold_seed)
    cases.sort(key=lambda c: (c["split"] != "train", c["id"]))
    records = []
    for c in cases:
        record = {"id": c["id"], "split": c["split"]}
        if c["split"] == "train":
            record["fold"] = folds[c["id"]]
        record.update(image=c["image"], image_sha256=sha256_of(out_dir / c["image"]),
                      label=c["label"], label_sha256=sha256_of(out_dir / c["label"]))
        records.append(record)

    out_dir.mkdir(parents=True, exist_ok=True)
    report.dataset_json_path = out_dir / "dataset.json"
    report.manifest_path = out_dir / "manifest.json"
    _write_index(report.dataset_json_path, _dataset_json(cases))
    _write_index(report.manifest_path, json.dumps({"cases": records}, indent=1) + "\n")
    report.listed = len(records)
    return report
