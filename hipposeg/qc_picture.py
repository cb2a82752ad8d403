"""The QC picture of a segmented case: axial, coronal and sagittal views through the segmented structure.

* :func:`reorient_to_ras` turns an array and its affine to the closest RAS axis order, for display.
* :func:`qc_views` cuts the three views (in mm, anatomical directions at the edges) through the structure.
* :func:`save_qc_png` draws them, the labels as coloured outlines with their volumes, the uncertain voxels
  shaded when given the uncertainty map (:func:`hipposeg.confidence.uncertainty_map`), and writes the PNG
  atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hipposeg.confidence import UNCERTAIN_ABOVE_BITS
from hipposeg.data.writers import atomic_path, check_writable
from hipposeg.volumes import (
    foreground_labels,
    label_counts,
    label_volumes,
    voxel_size,
    voxel_size_text,
    voxel_volume_mm3,
)

__all__ = ["reorient_to_ras", "qc_views", "save_qc_png"]

# Outline colours that stand out on a gray MRI, one per label (cycled beyond).
LABEL_COLOURS = ("#ff3030", "#20c8ff", "#ffd400", "#40ff60", "#ff50ff", "#ff9a1f", "#a080ff", "#ffffff")
#: The translucent fill of uncertain voxels (magenta: no label of a crop or a whole head has it), and its opacity.
UNCERTAIN_COLOUR, UNCERTAIN_ALPHA = "#ff40ff", 0.45


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


# ------------------------------------------------------------------------------------------------ views

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
    *,
    margin_mm: float = 20.0,
    min_fov_mm: float | None = 80.0,
    uncertainty: np.ndarray | None = None,
) -> list[dict]:
    """The three QC views, ready to draw with ``imshow(..., origin="lower", extent=...)``.

    Each view: ``name``, ``image`` and ``seg`` (2D, rows = vertical axis bottom-up, columns = horizontal
    axis left to right), ``uncertainty`` (the same cut of the ``uncertainty`` map, or None without one),
    ``extent`` (mm, voxel edges), ``x``/``y`` (mm, voxel centres, for contours), ``edges`` (anatomical
    direction at the left, right, bottom and top edges), ``slice_index`` (in the RAS-reoriented array) and
    ``position_mm`` (world coordinate of the slice plane).
    """
    image_array, seg = _volume3d(image_array), _volume3d(seg)
    if image_array.shape != seg.shape or seg.ndim != 3:
        raise ValueError(f"image {image_array.shape} and label map {seg.shape} must be the same 3D shape")
    if uncertainty is not None and _volume3d(uncertainty).shape != seg.shape:
        raise ValueError(f"uncertainty map {np.shape(uncertainty)} and label map {seg.shape} must be the same shape")
    image_ras, ras_affine, spacing = reorient_to_ras(image_array, affine)
    seg_ras, _, _ = reorient_to_ras(seg, affine)
    uncertainty_ras = None if uncertainty is None else reorient_to_ras(_volume3d(uncertainty), affine)[0]
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
        # after removing the normal axis, the remaining axes keep their order (h before v in all views)
        assert h_axis < v_axis
        img2d, seg2d = image_ras[tuple(take)].T, seg_ras[tuple(take)].T  # rows = vertical axis
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
                "uncertainty": None if uncertainty_ras is None else uncertainty_ras[tuple(take)].T,
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


def _volume3d(array) -> np.ndarray:
    """A 3D array of a 3D or (X, Y, Z, 1) one."""
    array = np.asarray(array)
    return array[..., 0] if array.ndim == 4 and array.shape[3] == 1 else array


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
    *,
    title: str = "",
    overwrite: bool = False,
    min_fov_mm: float | None = 80.0,
    figsize: tuple[float, float] = (9.0, 3.5),
    dpi: int = 110,
    uncertainty: np.ndarray | None = None,
) -> Path:
    """Write a QC picture: axial, coronal and sagittal views through the segmented structure.

    The arrays are reoriented to RAS from ``affine`` and drawn in millimetres (true aspect for
    anisotropic voxels), neurological convention (patient's left on the left, anterior/superior up),
    with the direction letters at the panel edges. The image is gray with a 1st-99.5th percentile
    window; each label is a coloured outline, named with its volume in the legend. With ``uncertainty``
    (the per-voxel map of :func:`hipposeg.confidence.uncertainty_map`, bits, the same grid as ``seg``) the
    voxels above :data:`hipposeg.confidence.UNCERTAIN_ABOVE_BITS` are shaded in translucent magenta under the
    outlines, with their volume in the legend. The view is the foreground's box with a margin, at least
    ``min_fov_mm`` wide (None: the whole volume). The figure is ``figsize`` inches at ``dpi`` (990x385
    pixels by default). Written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_path = Path(out_path)
    check_writable(out_path, overwrite)
    views = qc_views(image_array, seg, affine, min_fov_mm=min_fov_mm, uncertainty=uncertainty)
    names = foreground_labels(label_names)
    colours = {value: LABEL_COLOURS[i % len(LABEL_COLOURS)] for i, value in enumerate(names)}
    window = _window(views)

    fig = Figure(figsize=figsize, dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    widths = [(v["extent"][1] - v["extent"][0]) / max(v["extent"][3] - v["extent"][2], 1e-6) for v in views]
    bottom = 0.14 if uncertainty is None else 0.2  # room for the legend's second line
    grid = fig.add_gridspec(1, 3, width_ratios=widths, left=0.01, right=0.99, bottom=bottom, top=0.83, wspace=0.04)
    for column, view in enumerate(views):
        _draw_view(fig.add_subplot(grid[0, column]), view, window, colours)
    _draw_captions(fig, seg, affine, title)
    uncertain_mm3 = None if uncertainty is None else \
        float((_volume3d(uncertainty) > UNCERTAIN_ABOVE_BITS).sum()) * voxel_volume_mm3(affine)
    _draw_legend(fig, label_volumes(seg, affine, label_names), names, colours, uncertain_mm3)

    with atomic_path(out_path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return out_path


def _draw_view(ax, view: dict, window: tuple[float, float], colours: dict[int, str]) -> None:
    """One panel: the gray image, the uncertain voxels shaded (when the view has an uncertainty cut), an outline
    per label of ``colours``, direction letters and the slice title."""
    from matplotlib import patheffects
    from matplotlib.colors import to_rgba

    ax.set_facecolor("black")
    ax.imshow(
        np.asarray(view["image"], dtype=np.float32), cmap="gray", vmin=window[0], vmax=window[1],
        origin="lower", extent=view["extent"], interpolation="nearest", aspect="equal",
    )
    if view.get("uncertainty") is not None:
        shade = np.zeros(view["uncertainty"].shape + (4,), dtype=np.float32)
        shade[view["uncertainty"] > UNCERTAIN_ABOVE_BITS] = to_rgba(UNCERTAIN_COLOUR, UNCERTAIN_ALPHA)
        ax.imshow(shade, origin="lower", extent=view["extent"], interpolation="nearest", aspect="equal")
    seg2d = view["seg"]
    if seg2d.shape[0] >= 2 and seg2d.shape[1] >= 2:
        for value, colour in colours.items():
            mask = seg2d == value
            if mask.any():
                ax.contour(view["x"], view["y"], mask.astype(np.float32), levels=[0.5], colors=[colour],
                           linewidths=1.3)
    ax.set_xlim(view["extent"][0], view["extent"][1])
    ax.set_ylim(view["extent"][2], view["extent"][3])
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    stroke = [patheffects.withStroke(linewidth=2.0, foreground="black")]
    left, right, bottom, top = view["edges"]
    for text, x, y, ha, va in ((left, 0.02, 0.5, "left", "center"), (right, 0.98, 0.5, "right", "center"),
                               (bottom, 0.5, 0.02, "center", "bottom"), (top, 0.5, 0.98, "center", "top")):
        ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color="#ffff80", fontsize=9,
                fontweight="bold", path_effects=stroke)
    ax.set_title(f"{view['name']}  {view['world_axis']} = {view['position_mm']:.1f} mm",
                 color="white", fontsize=8.5, pad=3)


def _draw_captions(fig, seg: np.ndarray, affine: np.ndarray, title: str) -> None:
    """The title, and a subtitle with the voxel size, stored orientation and total volume (or EMPTY MASK)."""
    import nibabel as nib

    total = sum(c for v, c in label_counts(seg).items() if v != 0) * voxel_volume_mm3(affine)
    code = "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))
    subtitle = f"voxel {voxel_size_text(affine)} mm, stored {code}, shown RAS (patient's left on the left)"
    subtitle += f"   total {total:,.0f} mm\u00b3" if total else "   EMPTY MASK: no foreground"
    if title:
        fig.suptitle(title, color="white", fontsize=11, fontweight="bold", y=0.985)
    fig.text(0.5, 0.885, subtitle, ha="center", va="center", color="#e0e0e0" if total else "#ff6060", fontsize=8)


def _draw_legend(fig, volumes: dict[str, float], names: dict[int, str], colours: dict[int, str],
                 uncertain_mm3: float | None = None) -> None:
    """One legend entry per label: its outline colour, name and volume; then, with ``uncertain_mm3``, a second line:
    the shading of the uncertain voxels, its threshold and their volume."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    lines = [([Line2D([], [], color=colours[value], linewidth=2.2) for value in names],
              [f"{name}: {volumes[name]:,.0f} mm\u00b3" for name in names.values()])] if names else []
    if uncertain_mm3 is not None:
        lines.append(([Patch(facecolor=UNCERTAIN_COLOUR, alpha=UNCERTAIN_ALPHA, edgecolor="none")],
                      [f"uncertain voxels (entropy > {UNCERTAIN_ABOVE_BITS:g} bit): {uncertain_mm3:,.0f} mm\u00b3"]))
    for number, (handles, labels) in enumerate(lines):
        legend = fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 4), frameon=False,
                            fontsize=8.5, bbox_to_anchor=(0.5, 0.065 * (len(lines) - 1 - number)), handlelength=1.6,
                            columnspacing=1.6)
        for text in legend.get_texts():
            text.set_color("white")
