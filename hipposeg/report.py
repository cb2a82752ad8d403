"""Per-case volumes, QC flags, volume tables and QC pictures for ``hipposeg segment``.

* :func:`volume_row` turns one label map into one table row: a volume per label (voxel count times the
  voxel volume of the affine), left/right totals when the label names have sides, the whole total,
  and QC flags.
* :func:`reference_volume_ranges` gives the plausible range of one hippocampus' volume, measured once on
  the training labels by :func:`compute_reference_ranges` and stored in ``resources/volume_ranges.json``.
* :func:`write_volume_tables` writes ``volumes.csv`` and ``volumes.json`` atomically.
* :func:`save_qc_png` draws axial, coronal and sagittal views through the segmented structure, in RAS
  orientation with the anatomical directions marked, the labels as coloured outlines.

Rebuild the stored ranges with::

    python -m hipposeg.report compute-ranges \
        --labels '/path/to/msd_hippocampus/labelsTr/*.nii.gz' --dataset msd_hippocampus \
        -o hipposeg/resources/volume_ranges.json --overwrite
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from hipposeg.data.writers import atomic_path, check_writable, write_text
from hipposeg.errors import InputError

__all__ = [
    "QC_FLAGS",
    "volume_row",
    "label_volumes",
    "reference_volume_ranges",
    "compute_reference_ranges",
    "write_volume_tables",
    "save_qc_png",
    "reorient_to_ras",
    "qc_views",
]

RESOURCES_DIR = Path(__file__).resolve().parent / "resources"
VOLUME_RANGES_FILE = RESOURCES_DIR / "volume_ranges.json"

#: What each QC flag means (the flags are ";"-joined in the ``qc_flags`` column).
QC_FLAGS = {
    "empty_mask": "no foreground voxel at all",
    "volume_out_of_range": "the hippocampus volume (each side when the labels have sides, else the total) "
    "is outside the reference range",
    "touches_border": "foreground on a face of the volume: the structure may be cut off by the field of view",
    "unknown_label": "the label map holds values that are not in the label names",
}

FIRST_COLUMNS = ("case", "input_path", "voxel_size_mm", "model")
LAST_COLUMNS = ("qc_ok", "qc_flags")
SIDES = ("left", "right")

# Outline colours that stand out on a gray MRI, one per label (cycled beyond).
LABEL_COLOURS = ("#ff3030", "#20c8ff", "#ffd400", "#40ff60", "#ff50ff", "#ff9a1f", "#a080ff", "#ffffff")


# --------------------------------------------------------------------------------------------- volumes


def _label_names(label_names: dict) -> dict[int, str]:
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
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def voxel_size(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along the array axes (i, j, k), in mm."""
    aff = np.asarray(affine, dtype=np.float64)
    return tuple(float(s) for s in np.sqrt((aff[:3, :3] ** 2).sum(axis=0)))


def voxel_size_text(affine: np.ndarray) -> str:
    return "x".join(f"{s:.2f}" for s in voxel_size(affine))


def _label_counts(seg: np.ndarray) -> dict[int, int]:
    """Voxel count of every value in ``seg`` (integers; float label maps are rounded)."""
    seg = np.asarray(seg)
    if seg.dtype == bool:
        seg = seg.astype(np.uint8)
    elif not np.issubdtype(seg.dtype, np.integer):
        seg = np.rint(seg).astype(np.int64)
    if seg.size and seg.min() >= 0 and seg.max() < 65536:
        counts = np.bincount(seg.ravel())
        return {int(v): int(c) for v, c in enumerate(counts) if c}
    values, counts = np.unique(seg, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def label_volumes(seg: np.ndarray, affine: np.ndarray, label_names: dict) -> dict[str, float]:
    """``{label name: volume in mm3}`` for each foreground label of ``label_names``."""
    counts = _label_counts(seg)
    vv = voxel_volume_mm3(affine)
    return {name: counts.get(value, 0) * vv for value, name in _label_names(label_names).items()}


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
    sides, else against the total. ``extra_flags`` (e.g. from registration checks) are appended.
    """
    seg = np.asarray(seg)
    if seg.ndim != 3:
        raise ValueError(f"expected a 3D label map, got shape {seg.shape}")
    names = _label_names(label_names)
    counts = _label_counts(seg)
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
    for flag in extra_flags:
        if flag and flag not in flags:
            flags.append(str(flag))
    row["qc_ok"] = not flags
    row["qc_flags"] = ";".join(flags)
    return row


# ------------------------------------------------------------------------------------ reference ranges


def compute_reference_ranges(
    label_paths: Iterable[str | Path], low_factor: float = 0.5, high_factor: float = 1.5
) -> dict:
    """The range of whole-hippocampus volume (all foreground labels of a file) over ``label_paths``.

    Each file must hold ONE hippocampus (as the MSD crops do). Returns plain numbers: ``n_cases``,
    ``min``, ``max``, ``median``, ``p1``, ``p99`` (mm3) and the thresholds ``low = low_factor * min``,
    ``high = high_factor * max``.
    """
    import nibabel as nib

    volumes = []
    for path in sorted(str(p) for p in label_paths):
        img = nib.load(path)
        data = np.asarray(img.dataobj)
        volumes.append(int(np.count_nonzero(data)) * voxel_volume_mm3(img.affine))
    if not volumes:
        raise InputError(None, "no label files given to compute reference volume ranges from")
    v = np.asarray(volumes, dtype=np.float64)
    return {
        "unit": "mm3",
        "n_cases": int(v.size),
        "min": round(float(v.min()), 3),
        "max": round(float(v.max()), 3),
        "median": round(float(np.median(v)), 3),
        "p1": round(float(np.percentile(v, 1)), 3),
        "p99": round(float(np.percentile(v, 99)), 3),
        "low_factor": low_factor,
        "high_factor": high_factor,
        "low": round(low_factor * float(v.min()), 3),
        "high": round(high_factor * float(v.max()), 3),
    }


@lru_cache(maxsize=1)
def _load_ranges_file(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "reference volume ranges file is missing from the package") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"reference volume ranges file is not valid JSON ({exc})") from None


def reference_volume_ranges(manifest_dataset: str = "msd_hippocampus") -> dict:
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
    seen: list[str] = []
    for row in rows:
        for key in row:
            if key not in seen:
                seen.append(key)
    per_label = [c for c in seen if c.startswith("volume_") and c not in ("volume_left_mm3", "volume_right_mm3", "volume_total_mm3")]
    totals = [c for c in ("volume_left_mm3", "volume_right_mm3", "volume_total_mm3") if c in seen]
    head = [c for c in FIRST_COLUMNS if c in seen] if rows else list(FIRST_COLUMNS)
    tail = [c for c in LAST_COLUMNS if c in seen] if rows else list(LAST_COLUMNS)
    placed = set(head) | set(per_label) | set(totals) | set(tail)
    others = [c for c in seen if c not in placed]
    return head + per_label + totals + others + tail


def _plain(value):
    """numpy scalars/arrays to plain Python for JSON and CSV."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


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
    columns = _table_columns(rows)
    table = [{c: _plain(row.get(c)) for c in columns} for row in rows]

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({c: "" if v is None else v for c, v in row.items()})
    write_text(csv_path, buffer.getvalue(), overwrite=overwrite)
    write_text(json_path, json.dumps(table, indent=1) + "\n", overwrite=overwrite)
    return csv_path, json_path


# ------------------------------------------------------------------------------------- orientation


def reorient_to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """``array`` with its axes permuted/flipped to the closest RAS order, its new affine and voxel size.

    After this, array axis 0 runs towards the patient's Right, 1 towards Anterior, 2 towards Superior
    (for an oblique affine, the closest such axes). Voxel size is along the new axes, in mm.
    """
    import nibabel.orientations as nio

    affine = np.asarray(affine, dtype=np.float64)
    ornt = nio.io_orientation(affine)
    ras = nio.apply_orientation(np.asarray(array), ornt)
    new_affine = affine @ nio.inv_ornt_aff(ornt, np.asarray(array).shape[:3])
    return ras, new_affine, voxel_size(new_affine)


# --------------------------------------------------------------------------------------------- QC png

# Each view: (name, normal axis of the RAS array, horizontal axis, vertical axis, edge letters
# (left, right, bottom, top)). Arrays are shown with origin="lower", so the vertical axis grows upwards.
_VIEWS = (
    ("Axial", 2, 0, 1, ("L", "R", "P", "A")),
    ("Coronal", 1, 0, 2, ("L", "R", "I", "S")),
    ("Sagittal", 0, 1, 2, ("P", "A", "I", "S")),
)
_WORLD_AXIS = ("x", "y", "z")


def _slice_through(fg: np.ndarray, centre: np.ndarray, axis: int) -> int:
    """The slice index along ``axis`` through ``centre``; if that slice misses the foreground (the
    midline between two hippocampi), the slice with the most foreground instead."""
    index = int(np.clip(round(float(centre[axis])), 0, fg.shape[axis] - 1))
    if not fg.any() or np.take(fg, index, axis=axis).any():
        return index
    other = tuple(a for a in range(3) if a != axis)
    return int(np.argmax(fg.sum(axis=other)))


def _field_of_view(fg: np.ndarray, spacing, margin_mm: float, min_fov_mm: float | None) -> list[tuple[int, int]]:
    """Index range [lo, hi) to show along each axis: the foreground's box plus a margin, at least
    ``min_fov_mm`` wide, within the volume. The whole volume when empty or ``min_fov_mm`` is None."""
    if min_fov_mm is None or not fg.any():
        return [(0, n) for n in fg.shape]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(fg.any(axis=other))
        lo, hi = int(present[0]), int(present[-1]) + 1
        sp = spacing[axis]
        half_mm = max((hi - lo) * sp / 2 + margin_mm, min_fov_mm / 2)
        mid = (lo + hi) / 2
        a, b = int(math.floor(mid - half_mm / sp)), int(math.ceil(mid + half_mm / sp))
        box.append((max(a, 0), min(b, fg.shape[axis])))
    return box


def qc_views(
    image_array: np.ndarray,
    seg: np.ndarray,
    affine: np.ndarray,
    margin_mm: float = 20.0,
    min_fov_mm: float | None = 80.0,
) -> list[dict]:
    """The three QC views, ready to draw with ``imshow(..., origin="lower", extent=...)``.

    Each view: ``name``, ``image`` and ``seg`` (2D, rows = vertical axis bottom-up, columns = horizontal
    axis left to right), ``extent`` (mm, voxel edges), ``x``/``y`` (mm, voxel centres, for contours),
    ``edges`` (anatomical direction at the left, right, bottom and top edges), ``slice_index`` (in the
    RAS-reoriented array) and ``position_mm`` (world coordinate of the slice plane).
    """
    image_array = np.asarray(image_array)
    seg = np.asarray(seg)
    if image_array.ndim == 4 and image_array.shape[3] == 1:
        image_array = image_array[..., 0]
    if seg.ndim == 4 and seg.shape[3] == 1:
        seg = seg[..., 0]
    if image_array.shape != seg.shape or seg.ndim != 3:
        raise ValueError(f"image {image_array.shape} and label map {seg.shape} must be the same 3D shape")
    image_ras, ras_affine, spacing = reorient_to_ras(image_array, affine)
    seg_ras, _, _ = reorient_to_ras(seg, affine)
    fg = seg_ras != 0
    if fg.any():
        centre = np.array([np.mean(idx) for idx in np.nonzero(fg)])
    else:
        centre = (np.array(fg.shape) - 1) / 2
    box = _field_of_view(fg, spacing, margin_mm, min_fov_mm)

    views = []
    for name, normal, h_axis, v_axis, edges in _VIEWS:
        index = _slice_through(fg, centre, normal)
        take = [slice(lo, hi) for lo, hi in box]
        take[normal] = index
        img2d = image_ras[tuple(take)]
        seg2d = seg_ras[tuple(take)]
        # after removing the normal axis, the remaining axes keep their order (h before v in all views)
        assert h_axis < v_axis
        img2d, seg2d = img2d.T, seg2d.T  # rows = vertical axis
        (h0, h1), (v0, v1) = box[h_axis], box[v_axis]
        sh, sv = spacing[h_axis], spacing[v_axis]
        point = np.zeros(4)
        point[3] = 1.0
        point[normal] = index
        position = float((ras_affine @ point)[normal])
        views.append(
            {
                "name": name,
                "image": img2d,
                "seg": seg2d,
                "extent": (h0 * sh - sh / 2, (h1 - 1) * sh + sh / 2, v0 * sv - sv / 2, (v1 - 1) * sv + sv / 2),
                "x": np.arange(h0, h1) * sh,
                "y": np.arange(v0, v1) * sv,
                "edges": edges,
                "slice_index": index,
                "position_mm": position,
                "world_axis": _WORLD_AXIS[normal],
            }
        )
    return views


def _window(views: list[dict]) -> tuple[float, float]:
    values = np.concatenate([np.asarray(v["image"], dtype=np.float64).ravel() for v in views])
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [1, 99.5])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def save_qc_png(
    image_array: np.ndarray,
    seg: np.ndarray,
    affine: np.ndarray,
    out_path: str | Path,
    label_names: dict[int, str],
    title: str = "",
    overwrite: bool = False,
    *,
    min_fov_mm: float | None = 80.0,
    figsize: tuple[float, float] = (9.0, 3.5),
    dpi: int = 110,
) -> Path:
    """Write a QC picture: axial, coronal and sagittal views through the segmented structure.

    The arrays are reoriented to RAS from ``affine`` and drawn in millimetres (true aspect for
    anisotropic voxels), neurological convention (patient's left on the left, anterior/superior up),
    with the direction letters at the panel edges. The image is gray with a 1st-99.5th percentile
    window; each label is a coloured outline, named with its volume in the legend. The view is the
    foreground's box with a margin, at least ``min_fov_mm`` wide (None: the whole volume). The figure
    is ``figsize`` inches at ``dpi`` (990x385 pixels by default). Written atomically.
    """
    from matplotlib import patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    out_path = Path(out_path)
    check_writable(out_path, overwrite)
    views = qc_views(image_array, seg, affine, min_fov_mm=min_fov_mm)
    names = _label_names(label_names)
    volumes = label_volumes(seg, affine, label_names)
    counts = _label_counts(seg)
    total = sum(c for v, c in counts.items() if v != 0) * voxel_volume_mm3(affine)
    vmin, vmax = _window(views)

    fig = Figure(figsize=figsize, dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    widths = [(v["extent"][1] - v["extent"][0]) / max(v["extent"][3] - v["extent"][2], 1e-6) for v in views]
    grid = fig.add_gridspec(1, 3, width_ratios=widths, left=0.01, right=0.99, bottom=0.14, top=0.83, wspace=0.04)
    stroke = [patheffects.withStroke(linewidth=2.0, foreground="black")]
    colours = {value: LABEL_COLOURS[i % len(LABEL_COLOURS)] for i, value in enumerate(names)}

    for column, view in enumerate(views):
        ax = fig.add_subplot(grid[0, column])
        ax.set_facecolor("black")
        ax.imshow(
            np.asarray(view["image"], dtype=np.float32), cmap="gray", vmin=vmin, vmax=vmax,
            origin="lower", extent=view["extent"], interpolation="nearest", aspect="equal",
        )
        seg2d = view["seg"]
        if seg2d.shape[0] >= 2 and seg2d.shape[1] >= 2:
            for value in names:
                mask = seg2d == value
                if mask.any():
                    ax.contour(view["x"], view["y"], mask.astype(np.float32), levels=[0.5],
                               colors=[colours[value]], linewidths=1.3)
        ax.set_xlim(view["extent"][0], view["extent"][1])
        ax.set_ylim(view["extent"][2], view["extent"][3])
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        left, right, bottom, top = view["edges"]
        for text, x, y, ha, va in ((left, 0.02, 0.5, "left", "center"), (right, 0.98, 0.5, "right", "center"),
                                   (bottom, 0.5, 0.02, "center", "bottom"), (top, 0.5, 0.98, "center", "top")):
            ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color="#ffff80", fontsize=9,
                    fontweight="bold", path_effects=stroke)
        ax.set_title(f"{view['name']}  {view['world_axis']} = {view['position_mm']:.1f} mm",
                     color="white", fontsize=8.5, pad=3)

    import nibabel as nib

    code = "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))
    subtitle = f"voxel {voxel_size_text(affine)} mm, stored {code}, shown RAS (patient's left on the left)"
    subtitle += f"   total {total:,.0f} mm\u00b3" if total else "   EMPTY MASK: no foreground"
    if title:
        fig.suptitle(title, color="white", fontsize=11, fontweight="bold", y=0.985)
    fig.text(0.5, 0.885, subtitle, ha="center", va="center", color="#e0e0e0" if total else "#ff6060", fontsize=8)

    handles = [Line2D([], [], color=colours[value], linewidth=2.2) for value in names]
    labels = [f"{name}: {volumes[name]:,.0f} mm\u00b3" for name in names.values()]
    if handles:
        legend = fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 4), frameon=False,
                            fontsize=8.5, bbox_to_anchor=(0.5, 0.0), handlelength=1.6, columnspacing=1.6)
        for text in legend.get_texts():
            text.set_color("white")

    with atomic_path(out_path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return out_path


# ------------------------------------------------------------------------------------------------ CLI


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import glob
    import shlex
    import sys

    parser = argparse.ArgumentParser(prog="python -m hipposeg.report", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    compute = sub.add_parser("compute-ranges", help="measure the reference hippocampus volume range")
    compute.add_argument("--labels", required=True, help="glob of label files, each with ONE hippocampus")
    compute.add_argument("--dataset", default="msd_hippocampus", help="manifest dataset name to store it under")
    compute.add_argument("-o", "--output", default=str(VOLUME_RANGES_FILE))
    compute.add_argument("--low-factor", type=float, default=0.5)
    compute.add_argument("--high-factor", type=float, default=1.5)
    compute.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    paths = sorted(glob.glob(args.labels))
    ranges = compute_reference_ranges(paths, args.low_factor, args.high_factor)
    ranges["applies_to"] = "one hippocampus: the total of a one-sided label map, or each side of a left/right one"
    ranges["how"] = (
        f"volume of all foreground voxels (voxel count x |det(affine[:3,:3])|) of each of the {ranges['n_cases']} "
        f"training label files of {args.dataset} (one hippocampus per file); low = {args.low_factor} x min, "
        f"high = {args.high_factor} x max"
    )
    output = Path(args.output)
    stored = {"about": "Reference hippocampus volumes (mm3) for the volume_out_of_range QC flag; see hipposeg/report.py",
              "datasets": {}}
    if output.exists():
        stored = json.loads(output.read_text())
    stored["datasets"][args.dataset] = ranges
    stored["datasets"][args.dataset]["command"] = "python -m hipposeg.report " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    write_text(output, json.dumps(stored, indent=1) + "\n", overwrite=args.overwrite)
    print(json.dumps(ranges, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
