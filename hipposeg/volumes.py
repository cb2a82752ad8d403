"""Per-case volumes, QC flags and the volume tables of ``hipposeg segment``.

* :func:`volume_row` turns one label map into one table row: a volume per label (voxel count times the
  voxel volume of the affine), left/right totals when the label names have sides, the whole total,
  and QC flags (codes of :data:`hipposeg.qc_flags.QC_FLAGS`, the one table of what each means).
* :func:`reference_volume_ranges` gives the plausible range of one hippocampus' volume, stored in
  ``resources/volume_ranges.json`` (rebuilt from the training labels): the one volume-plausibility rule, applied
  to every row (to each side of a whole head).
* :func:`write_volume_tables` writes ``volumes.csv`` and ``volumes.json`` atomically; :func:`rows_to_csv` is
  the one CSV writer for tables of rows (also ``hipposeg evaluate``'s per-case table).

The QC picture drawn beside each mask is :mod:`hipposeg.qc_picture`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from hipposeg.data.writers import check_writable, write_text
from hipposeg.errors import InputError
from hipposeg.qc_flags import QC_FLAGS, REFERENCE_DATASET, THICK_SLICE_LIMIT_MM, VOLUME_RANGES_FILE

__all__ = [
    "QC_FLAGS",
    "VOLUME_RANGES_FILE",
    "foreground_labels",
    "label_counts",
    "label_volumes",
    "volume_row",
    "reference_volume_ranges",
    "rows_to_csv",
    "write_volume_tables",
]

#: What each QC flag means: the one table, :data:`hipposeg.qc_flags.QC_FLAGS` (re-exported here).
FIRST_COLUMNS = ("case", "input_path", "voxel_size_mm", "model")
LAST_COLUMNS = ("qc_ok", "qc_flags")
SIDES = ("left", "right")
SIDE_COLUMNS = ("volume_left_mm3", "volume_right_mm3", "volume_total_mm3")


# --------------------------------------------------------------------------------------------- volumes


def foreground_labels(label_names: dict) -> dict[int, str]:
    """``{value: name}`` for the foreground labels (keys may be strings, as in JSON), sorted by value."""
    out = {}
    for key, name in label_names.items():
        value = int(key)
        if value == 0 or str(name).lower() == "background":
            continue
        out[value] = str(name)
    return dict(sorted(out.items()))


def _column_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "label"


def label_side(name: str) -> str | None:
    """``"left"``/``"right"`` when a label name says which side it is on, else None."""
    lowered = name.lower()
    has_left, has_right = "left" in lowered, "right" in lowered
    if has_left == has_right:
        return None
    return "left" if has_left else "right"


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel in mm3: ``|det(affine[:3, :3])|``."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def voxel_size(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along the array axes (i, j, k), in mm."""
    aff = np.asarray(affine, dtype=np.float64)
    return tuple(float(s) for s in np.sqrt((aff[:3, :3] ** 2).sum(axis=0)))


def voxel_size_text(affine: np.ndarray) -> str:
    """The voxel size as the tables write it: ``"0.94x0.94x1.50"`` (mm)."""
    return "x".join(f"{s:.2f}" for s in voxel_size(affine))


def label_counts(seg: np.ndarray) -> dict[int, int]:
    """Voxel count of every value in ``seg`` (integers; float label maps are rounded)."""
    seg = np.asarray(seg)
    if seg.dtype == bool:
        seg = seg.astype(np.uint8)
    elif not np.issubdtype(seg.dtype, np.integer):
        seg = np.rint(seg).astype(np.int64)
    if seg.size and seg.min() >= 0 and seg.max() < 65536:
        # a head's label map is almost all background: count the foreground voxels only (np.bincount would first
        # copy all 17 M voxels to 64-bit integers, 0.6 s a head)
        foreground = seg[seg != 0]
        counts = np.bincount(foreground) if foreground.size else np.zeros(1, dtype=np.int64)
        counts[0] = seg.size - foreground.size
        return {int(v): int(c) for v, c in enumerate(counts) if c}
    values, counts = np.unique(seg, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def label_volumes(seg: np.ndarray, affine: np.ndarray, label_names: dict) -> dict[str, float]:
    """``{label name: volume in mm3}`` for each foreground label of ``label_names``."""
    counts = label_counts(seg)
    vv = voxel_volume_mm3(affine)
    return {name: counts.get(value, 0) * vv for value, name in foreground_labels(label_names).items()}


def _touches_border(seg: np.ndarray) -> bool:
    fg = np.asarray(seg) != 0
    for axis in range(fg.ndim):
        if fg.shape[axis] == 0:
            continue
        if np.take(fg, 0, axis=axis).any() or np.take(fg, -1, axis=axis).any():
            return True
    return False


def _in_range(volume: float, ranges: dict) -> bool:
    return float(ranges["low"]) <= volume <= float(ranges["high"])


def volume_row(
    case: str,
    input_path: str,
    seg: np.ndarray,
    affine: np.ndarray,
    label_names: dict[int, str],
    reference_ranges: dict | None = None,
    extra_flags: Sequence[str] = (),
) -> dict:
    """One table row for one segmented case.

    Columns: ``case``, ``input_path``, ``voxel_size_mm`` ("1.00x1.00x1.00"), ``volume_<name>_mm3`` per
    foreground label, ``volume_left_mm3``/``volume_right_mm3`` when label names have sides,
    ``volume_total_mm3``, then ``qc_ok`` and ``qc_flags`` (";"-joined, empty when fine; see :data:`QC_FLAGS`).
    Volumes are voxel counts times ``|det(affine[:3, :3])|``.

    ``reference_ranges`` (``{"low": mm3, "high": mm3}``, e.g. from :func:`reference_volume_ranges`) is
    the plausible volume of ONE hippocampus: it is checked against each side when the labels have
    sides, else against the total. ``extra_flags`` (codes of :data:`QC_FLAGS`, e.g. from the whole-head
    registration checks) are appended; anything else is a ``ValueError``.
    """
    seg = np.asarray(seg)
    if seg.ndim != 3:
        raise ValueError(f"expected a 3D label map, got shape {seg.shape}")
    names = foreground_labels(label_names)
    counts = label_counts(seg)
    vv = voxel_volume_mm3(affine)

    row: dict = {"case": str(case), "input_path": str(input_path), "voxel_size_mm": voxel_size_text(affine)}
    for value, name in names.items():
        row[f"volume_{_column_name(name)}_mm3"] = counts.get(value, 0) * vv

    sides = {value: label_side(name) for value, name in names.items()}
    named_sides = [s for s in SIDES if s in sides.values()]
    if named_sides:
        for side in SIDES:
            n = sum(counts.get(value, 0) for value, s in sides.items() if s == side)
            row[f"volume_{side}_mm3"] = n * vv
    n_foreground = sum(c for value, c in counts.items() if value != 0)
    row["volume_total_mm3"] = n_foreground * vv

    flags: list[str] = []
    if n_foreground == 0:
        flags.append("empty_mask")
    elif reference_ranges is not None:
        checked = [row[f"volume_{s}_mm3"] for s in named_sides] if named_sides else [row["volume_total_mm3"]]
        if not all(_in_range(v, reference_ranges) for v in checked):
            flags.append("volume_out_of_range")
    if n_foreground and _touches_border(seg):
        flags.append("touches_border")
    if any(value != 0 and value not in names for value in counts):
        flags.append("unknown_label")
    if max(voxel_size(affine)) > THICK_SLICE_LIMIT_MM:
        flags.append("thick_slices")
    unknown = [flag for flag in extra_flags if flag not in QC_FLAGS]
    if unknown:
        raise ValueError(f"QC flags must be codes of hipposeg.qc_flags.QC_FLAGS, not {unknown}")
    for flag in extra_flags:
        if flag not in flags:
            flags.append(str(flag))
    row["qc_ok"] = not flags
    row["qc_flags"] = ";".join(flags)
    return row


# ------------------------------------------------------------------------------------ reference ranges


@lru_cache(maxsize=1)
def _load_ranges_file(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "reference volume ranges file is missing from the package") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"reference volume ranges file is not valid JSON ({exc})") from None


def reference_volume_ranges(manifest_dataset: str = REFERENCE_DATASET) -> dict:
    """The plausible volume of ONE hippocampus (mm3) as ``{"low", "high", ...}``.

    Measured on the training labels of ``manifest_dataset`` (see ``resources/volume_ranges.json``,
    which also holds min, max, median, p1, p99 and how it was computed). A whole-head scan has two
    hippocampi: the range applies to each side.
    """
    stored = _load_ranges_file(str(VOLUME_RANGES_FILE))
    datasets = stored.get("datasets", {})
    if manifest_dataset not in datasets:
        known = ", ".join(sorted(datasets)) or "none"
        raise InputError(VOLUME_RANGES_FILE, f"no reference volume range for dataset {manifest_dataset!r}; known: {known}")
    return dict(datasets[manifest_dataset])


# -------------------------------------------------------------------------------------------- tables


def _table_columns(rows: list[dict]) -> list[str]:
    """Volume-table column order: case, input path, voxel size, model, per-label volumes, side and total
    volumes, any other columns, qc_ok, qc_flags."""
    seen = _union_columns(rows)
    per_label = [c for c in seen if c.startswith("volume_") and c not in SIDE_COLUMNS]
    totals = [c for c in SIDE_COLUMNS if c in seen]
    head = [c for c in FIRST_COLUMNS if c in seen] if rows else list(FIRST_COLUMNS)
    tail = [c for c in LAST_COLUMNS if c in seen] if rows else list(LAST_COLUMNS)
    placed = set(head) | set(per_label) | set(totals) | set(tail)
    others = [c for c in seen if c not in placed]
    return head + per_label + totals + others + tail


def _union_columns(rows: Sequence[dict]) -> list[str]:
    """Every key of ``rows``, in order of first appearance."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _plain(value):
    """numpy scalars/arrays to plain Python for JSON and CSV."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def rows_to_csv(rows: Sequence[dict], *, columns: Sequence[str] | None = None,
                significant_digits: int | None = 6) -> str:
    """CSV text of ``rows``: a header of ``columns`` (default: every key, in order of first appearance), one
    line per row. A missing or None value is an empty cell; floats keep ``significant_digits`` significant
    digits (None: every digit)."""
    columns = list(columns) if columns is not None else _union_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {c: _plain(row.get(c)) for c in columns}
        writer.writerow({c: _cell(v, significant_digits) for c, v in cells.items()})
    return buffer.getvalue()


def _cell(value, significant_digits: int | None):
    if value is None:
        return ""
    if isinstance(value, float) and significant_digits is not None:
        return f"{value:.{significant_digits}g}"
    return value


def volume_table(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """(columns, rows with every column, plain JSON values) of the volume table (see :func:`write_volume_tables`)."""
    columns = _table_columns(rows)
    return columns, [{c: _plain(row.get(c)) for c in columns} for row in rows]


def write_volume_tables(rows: list[dict], out_dir: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``volumes.csv`` and ``volumes.json`` in ``out_dir``, atomically; return their paths.

    Columns are the union over rows in a stable order: case, input_path, voxel_size_mm, per-label
    volumes, side and total volumes, any other columns, qc_ok, qc_flags. A missing value is an empty
    CSV cell and a JSON null. Neither file is written if either exists and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    csv_path, json_path = out_dir / "volumes.csv", out_dir / "volumes.json"
    check_writable(csv_path, overwrite)
    check_writable(json_path, overwrite)
    columns, table = volume_table(rows)
    write_text(csv_path, rows_to_csv(table, columns=columns, significant_digits=None), overwrite=overwrite)
    write_text(json_path, json.dumps(table, indent=1) + "\n", overwrite=overwrite)
    return csv_path, json_path
