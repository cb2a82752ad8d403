"""What ``hipposeg longitudinal`` writes besides the masks: the table (CSV) and the subject's QC picture.

The picture puts the same slices of every time point side by side: each hippocampus crop is one box of the common
space, so a slice index is the same anatomy at every time point. Per side a sagittal slice (the long axis) and a
coronal slice through the centre of the side's region, with each time point's mask outline (anterior red,
posterior blue), its soft volume and change under it, and the volume trajectory (per side, % of baseline) at the
right. Written atomically (:func:`hipposeg.data.writers.atomic_path`). The trajectory is drawn by
:func:`hipposeg.group_report.plot_trajectory`, as the group report draws every subject's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from hipposeg.data.writers import atomic_path, check_writable
from hipposeg.qc_picture import LABEL_COLOURS

SIDES = ("left", "right")


def table_csv(rows: Sequence[dict]) -> str:
    """``longitudinal.csv``: the columns of :data:`hipposeg.longitudinal.pipeline.TABLE_COLUMNS`, then any other
    column of the rows; empty cells where a value is unknown (times, rates with two scans)."""
    from hipposeg.longitudinal.pipeline import TABLE_COLUMNS
    from hipposeg.volumes import rows_to_csv

    extra = [c for row in rows for c in row if c not in TABLE_COLUMNS]
    columns = [*TABLE_COLUMNS, *dict.fromkeys(extra)]
    return rows_to_csv(rows, columns=columns, significant_digits=8)


def _centre(mask: np.ndarray) -> tuple[int, int, int]:
    if not mask.any():
        return tuple(s // 2 for s in mask.shape)
    return tuple(int(round(v)) for v in np.argwhere(mask).mean(axis=0))


def save_longitudinal_png(path: str | Path, crops: Sequence[dict], probabilities: Sequence[dict],
                          rows: Sequence[dict], *, overwrite: bool = False, dpi: int = 100) -> Path:
    """The subject's QC picture (see the module text). ``crops[t][side]``: the crop :class:`Image` of time point
    ``t``; ``probabilities[t][side]``: its (3, *crop) probabilities; ``rows``: the table rows in the same order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hipposeg.group_report import plot_trajectory

    path = Path(path)
    check_writable(path, overwrite)
    n = len(crops)
    labels = [{side: np.argmax(p[side], axis=0) for side in SIDES} for p in probabilities]
    views = []  # (side, axis of the slice, index)
    for side in SIDES:
        union = np.logical_or.reduce([lab[side] > 0 for lab in labels])
        centre = _centre(union)
        views += [(side, 0, centre[0]), (side, 1, centre[1])]
    fig = Figure(figsize=(1.9 * n + 3.6, 1.9 * len(views) + 0.5), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(views), n + 2, left=0.04, right=0.98, bottom=0.07, top=0.93, wspace=0.05,
                            hspace=0.12, width_ratios=[1.0] * n + [0.25, 1.8])
    for t in range(n):
        for r, (side, axis, index) in enumerate(views):
            ax = fig.add_subplot(grid[r, t])
            image = np.take(crops[t][side].array, index, axis=axis)
            lab = np.take(labels[t][side], index, axis=axis)
            lo, hi = np.percentile(crops[t][side].array, [1, 99.5])
            # crop axes: 0 x (mirrored on the right), 1 posterior -> anterior, 2 inferior -> superior
            ax.imshow(image.T, cmap="gray", origin="lower", vmin=lo, vmax=max(hi, lo + 1e-6), interpolation="nearest")
            for value in (1, 2):
                if (lab == value).any():
                    ax.contour((lab == value).T.astype(float), levels=[0.5], colors=[LABEL_COLOURS[value - 1]],
                               linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{rows[t]['scan']}" + (f"\n{rows[t]['time_years']:g} y" if rows[t]["time_years"]
                                                      is not None else ""), color="white", fontsize=8)
            if t == 0:
                ax.set_ylabel(f"{side} {'sagittal' if axis == 0 else 'coronal'}", color="white", fontsize=8)
            if axis == 0:
                change = rows[t][f"change_{side}_pct"]
                ax.text(0.02, 0.02, f"{rows[t][f'volume_{side}_mm3']:.0f} mm³ ({change:+.1f} %)"
                        if change is not None else "", transform=ax.transAxes, color="yellow", fontsize=7)
    plot_trajectory(fig.add_subplot(grid[:, n + 1]), rows, dark=True)
    fig.suptitle("hipposeg longitudinal: the same slices of every time point (common space)", color="white",
                 fontsize=9)
    with atomic_path(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return path
