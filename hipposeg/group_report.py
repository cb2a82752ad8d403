"""One self-contained HTML page for a group of segmented cases: what to look at first, and how the volumes compare.

:func:`write_group_report` takes the rows of ``hipposeg segment``'s volume table (``volumes.json``; with
``etiv_mm3`` for whole heads, see :mod:`hipposeg.fullhead.icv`) and each case's QC picture, and writes one HTML
file that opens in any browser from disk: the pictures and plots are embedded as base64 PNG, the CSS is inline,
there is no script and no link to the network. In order, the page shows

1. the exact command and model version that made the volumes;
2. the cases that need a look (QC flags), each with every reason in words;
3. the distribution of each volume (left, right, and each side's anterior = head and posterior = body), in mm3
   and, when the rows have an eTIV, as a per mille of eTIV, with every case a labelled dot and flagged cases red;
4. the left/right asymmetry index, ``AI = 100 * (L - R) / ((L + R) / 2)`` in %, per case;
5. a table of every case's numbers and predicted Dice, least sure first (:func:`review_order`: cases flagged
   ``low_confidence`` by ascending predicted Dice, then the other flagged cases, then the rest);
6. with longitudinal tables (``hipposeg longitudinal``'s rows per subject, e.g. the BIDS App's
   ``sub-X_desc-hipposeg_longitudinal.tsv``): the rate table (per side, % per year with its standard error) and
   one trajectory plot per subject (change vs the baseline in %, per side, over time or session order:
   :func:`plot_trajectory`, which also draws the trajectory of ``hipposeg longitudinal``'s QC picture);
7. every case's QC picture, in the table's order.

:func:`load_segment_output` reads the rows and QC pictures of a ``hipposeg segment`` output folder.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

from hipposeg.data.writers import atomic_path

__all__ = ["MEASURES", "asymmetry_index", "is_flagged", "is_low_confidence", "flag_reasons", "load_segment_output",
           "plot_trajectory", "review_order", "write_group_report"]

#: (volume column stem, label on the page), in the order they are plotted.
MEASURES = (
    ("left", "left"),
    ("right", "right"),
    ("left_anterior", "left head (anterior)"),
    ("left_posterior", "left body (posterior)"),
    ("right_anterior", "right head (anterior)"),
    ("right_posterior", "right body (posterior)"),
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_DOT_LABELS = 15  # with more cases than this only flagged dots carry their case name

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#1d1d1f;line-height:1.4;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:2px solid #ddd;padding-bottom:4px}
.meta{color:#555}.meta code,pre{background:#f4f4f6;border-radius:4px}
pre{padding:8px 10px;white-space:pre-wrap;word-break:break-all}
.summary{display:flex;gap:16px;margin:12px 0}.pill{padding:6px 12px;border-radius:16px;font-weight:600}
.ok{background:#e3f4e8;color:#17612f}.bad{background:#fde7e7;color:#9b1c1c}
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f6}td.text,th.text{text-align:left}tr.flagged td{background:#fff4f4}
ul.reasons{margin:4px 0 0 0;padding-left:20px}.note{color:#555;font-size:.9em;max-width:900px}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;margin:14px 0}
.card.flagged{border:2px solid #d33}.card h3{margin:0 0 6px 0}.card img{max-width:100%;height:auto}
img.plot{max-width:100%;height:auto;display:block;margin:8px 0}
.trajectories{display:flex;flex-wrap:wrap;gap:10px}img.trajectory{max-width:32%;height:auto}
"""


# ------------------------------------------------------------------------------------------------------ data


def _number(value) -> float | None:
    """A finite float from a table cell, or None (empty, missing, not a number)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flag_list(row: Mapping) -> list[str]:
    flags = row.get("qc_flags") or []
    if isinstance(flags, str):
        flags = flags.split(";")
    return [str(f).strip() for f in flags if str(f).strip()]


def is_flagged(row: Mapping) -> bool:
    """A case needs a look: it has QC flags or ``qc_ok`` is false."""
    qc_ok = row.get("qc_ok", True)
    if isinstance(qc_ok, str):
        qc_ok = qc_ok.strip().lower() not in ("false", "0", "no")
    return bool(_flag_list(row)) or not qc_ok


def is_low_confidence(row: Mapping) -> bool:
    """The case's predicted Dice is below the threshold of the stored mapping that predicted it: it has the QC flag
    ``low_confidence`` (a crop) or ``low_confidence_<side>`` (a side of a whole head)."""
    return any(flag == "low_confidence" or flag.startswith("low_confidence_") for flag in _flag_list(row))


def review_order(rows: Sequence[Mapping]) -> list[tuple[int, Mapping]]:
    """``(index, row)`` in the order a person should check them: the ``low_confidence`` cases first, then the other
    flagged cases, then the rest; within each, ascending predicted Dice (the lower side's for a whole head,
    :func:`hipposeg.confidence.row_predicted_dice`), cases without one after those with one; ties in the given
    order."""
    from hipposeg.confidence import row_predicted_dice

    def key(item: tuple[int, Mapping]) -> tuple:
        index, row = item
        dice = row_predicted_dice(row)
        return (not is_low_confidence(row), not is_flagged(row), not dice, min(dice.values(), default=0.0), index)

    return sorted(enumerate(rows), key=key)


def flag_reasons(row: Mapping) -> list[str]:
    """Each QC flag of ``row`` in words (a known flag code gets its explanation)."""
    from hipposeg.volumes import QC_FLAGS

    reasons = [f"{flag}: {QC_FLAGS[flag]}" if flag in QC_FLAGS else flag for flag in _flag_list(row)]
    if not reasons and is_flagged(row):
        reasons.append("qc_ok is false (no reason recorded)")
    return reasons


def asymmetry_index(row: Mapping) -> float | None:
    """``100 * (L - R) / ((L + R) / 2)`` in % (positive: left larger), or None without both sides."""
    left, right = _number(row.get("volume_left_mm3")), _number(row.get("volume_right_mm3"))
    if left is None or right is None or left + right <= 0:
        return None
    return 100.0 * (left - right) / ((left + right) / 2.0)


def _volume(row: Mapping, stem: str) -> float | None:
    return _number(row.get(f"volume_{stem}_mm3"))


def _per_mille_etiv(row: Mapping, stem: str) -> float | None:
    volume, etiv = _volume(row, stem), _number(row.get("etiv_mm3"))
    return None if volume is None or not etiv else 1000.0 * volume / etiv


def load_segment_output(out_dir: str | Path) -> tuple[list[dict], dict[str, Path]]:
    """(rows of ``volumes.json``, {case: ``<case>_qc.png``} for the pictures that exist) of a segment output folder."""
    out_dir = Path(out_dir)
    rows = json.loads((out_dir / "volumes.json").read_text())
    pictures = {row["case"]: out_dir / f"{row['case']}_qc.png" for row in rows}
    return rows, {case: path for case, path in pictures.items() if path.is_file()}


# ----------------------------------------------------------------------------------------------------- plots


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _strip_plot(series: list[tuple[str, list[tuple[str, float, bool]]]], ylabel: str, title: str) -> bytes:
    """One column per measure, one dot per case (red when flagged, named when few), a box behind from 5 cases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.0 + 1.9 * len(series), 4.2))
    n_cases = max((len(points) for _, points in series), default=0)
    for x, (_, points) in enumerate(series):
        values = [v for _, v, _ in points]
        if len(values) >= 5:
            ax.boxplot([values], positions=[x], widths=0.5, showfliers=False, medianprops={"color": "#555"},
                       boxprops={"color": "#999"}, whiskerprops={"color": "#999"}, capprops={"color": "#999"})
        for i, (case, value, flagged) in enumerate(sorted(points, key=lambda p: p[1])):
            dx = 0.18 * ((i % 5) - 2) / 2 if len(points) > 1 else 0.0
            ax.plot(x + dx, value, "o", ms=7, color="#d62728" if flagged else "#1f77b4", alpha=0.85)
            if flagged or n_cases <= MAX_DOT_LABELS:
                ax.annotate(case, (x + dx, value), xytext=(7, -3), textcoords="offset points", fontsize=8,
                            color="#9b1c1c" if flagged else "#333")
    whole = sum(1 for label, _ in series if "(" not in label)  # whole sides first, then their parts
    if 0 < whole < len(series):
        ax.axvline(whole - 0.5, color="#bbb", lw=1, ls="--")
    ax.set_xticks(range(len(series)))
    ax.set_xticklabels([label.replace(" (", "\n(") for label, _ in series], fontsize=9)
    ax.set_xlim(-0.6, len(series) - 0.2)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(fig)


def _asymmetry_plot(points: list[tuple[str, float, bool]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(points, key=lambda p: p[1])
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(points)))
    ys = range(len(points))
    ax.barh(list(ys), [v for _, v, _ in points], color=["#d62728" if f else "#1f77b4" for _, _, f in points],
            height=0.6)
    ax.axvline(0, color="#333", lw=1)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([case for case, _, _ in points], fontsize=8)
    limit = max(10.0, max(abs(v) for _, v, _ in points) * 1.15)
    ax.set_xlim(-limit, limit)
    ax.set_xlabel("asymmetry index (%)   <- right larger | left larger ->")
    ax.grid(axis="x", alpha=0.3)
    return _figure_png(fig)


def plot_trajectory(ax, rows: Sequence[Mapping], *, dark: bool = False) -> None:
    """Volume change vs the baseline (%) per side on the matplotlib axes ``ax``, one point per row of a
    longitudinal table (``change_left_pct``, ``change_right_pct``: numbers or their text, None or empty when
    unknown): over ``time_years`` when every row has one, else in row order, each tick named by the row's
    ``session`` (else its number, 1 for the first); a row that needs a look (:func:`is_flagged`) gets a red cross
    on the zero line.
    ``dark``: light lines and text on black, as in the QC picture of ``hipposeg longitudinal``
    (:mod:`hipposeg.longitudinal.report`), which draws its trajectory with this too."""
    times = [_number(row.get("time_years")) for row in rows]
    known = bool(rows) and all(t is not None for t in times)
    x = times if known else list(range(len(rows)))
    colours = ("#ff9a1f", "#40ff60") if dark else ("#1f77b4", "#ff7f0e")
    text = "white" if dark else "#1d1d1f"
    for side, colour in zip(("left", "right"), colours):
        y = [_number(row.get(f"change_{side}_pct")) for row in rows]
        ax.plot(x, [math.nan if v is None else v for v in y], "o-", color=colour, label=side)
    flagged = [x[i] for i, row in enumerate(rows) if is_flagged(row)]
    if flagged:
        ax.plot(flagged, [0.0] * len(flagged), "x", color="#d62728", ms=9, label="QC flag")
    ax.axhline(0.0, color="#888888", linewidth=0.8)
    ax.set_xlabel("years since baseline" if known else "session (no acquisition times)", color=text, fontsize=8)
    if not known:
        ax.set_xticks(x)
        ax.set_xticklabels([str(row.get("session") or k + 1) for k, row in enumerate(rows)], fontsize=7)
    ax.set_ylabel("volume change vs baseline (%)", color=text, fontsize=8)
    ax.grid(alpha=0.3, color="#888888")
    ax.tick_params(colors=text, labelsize=7)
    if dark:
        ax.set_facecolor("black")
        for spine in ax.spines.values():
            spine.set_color("#888888")
    ax.legend(fontsize=7, facecolor="black" if dark else "white", labelcolor=text)


def _trajectory_plot(subject: str, rows: Sequence[Mapping]) -> bytes:
    """One subject's :func:`plot_trajectory`, titled with its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 2.6))
    plot_trajectory(ax, rows)
    ax.set_title(subject, fontsize=10)
    return _figure_png(fig)


# ------------------------------------------------------------------------------------------------------ HTML


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _picture_uri(picture) -> str | None:
    """A data URI for a QC picture given as PNG bytes or a path; None when there is none or it is not a PNG."""
    if picture is None:
        return None
    data = bytes(picture) if isinstance(picture, (bytes, bytearray)) else Path(picture).read_bytes()
    return _png_data_uri(data) if data.startswith(PNG_SIGNATURE) else None


def _header(n: int, n_flagged: int, command: str, model_version: str, title: str) -> str:
    made = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    status = (f'<span class="pill bad">{n_flagged} of {n} need a look</span>' if n_flagged
              else f'<span class="pill ok">all {n} cases passed QC</span>')
    return (f"<h1>{_e(title)}</h1>\n<div class=\"summary\"><span class=\"pill ok\">{n} cases</span>{status}</div>\n"
            f"<p class=\"meta\">Model: <code>{_e(model_version)}</code> &middot; report written {_e(made)}</p>\n"
            f"<p class=\"meta\">Command that made these volumes:</p>\n<pre><code>{_e(command)}</code></pre>\n")


def _flagged_section(flagged: list[tuple[int, Mapping]]) -> str:
    if not flagged:
        return "<h2>Cases that need a look</h2>\n<p>None: every case passed the automatic QC checks.</p>\n"
    items = []
    for index, row in flagged:
        reasons = "".join(f"<li>{_e(reason)}</li>" for reason in flag_reasons(row))
        items.append(f'<tr class="flagged"><td class="text"><a href="#case-{index}">{_e(row.get("case", "?"))}</a>'
                     f'</td><td class="text"><ul class="reasons">{reasons}</ul></td></tr>')
    return ("<h2>Cases that need a look</h2>\n<p class=\"note\">Check these QC pictures first (links below); a flag "
            "is a reason to look, not a verdict.</p>\n<table><tr><th class=\"text\">case</th>"
            "<th class=\"text\">why</th></tr>\n" + "\n".join(items) + "\n</table>\n")


def _distribution_section(ordered: list[tuple[int, Mapping]]) -> str:
    few_names = "; only flagged dots are named, as there are many cases" if len(ordered) > MAX_DOT_LABELS else ""
    parts = ["<h2>Volumes across the group</h2>\n<p class=\"note\">One dot per case: blue passed QC, red has QC "
             f"flags{few_names}. "
             "Anterior = hippocampal head, posterior = body and tail (the Task04 labels). No normative range is drawn: "
             "published norms come from other segmentation protocols and do not apply to these volumes.</p>\n"]
    volume_series = []
    for stem, label in MEASURES:
        points = [(str(row.get("case", "?")), v, is_flagged(row)) for _, row in ordered
                  if (v := _volume(row, stem)) is not None]
        if points:
            volume_series.append((label, points))
    if not volume_series:
        return "<h2>Volumes across the group</h2>\n<p>No volumes in the rows.</p>\n"
    parts.append(f'<img class="plot" alt="hippocampus volumes per case, mm3" src="'
                 f'{_png_data_uri(_strip_plot(volume_series, "volume (mm³)", "Hippocampus volume"))}">\n')
    etiv_series = []
    for stem, label in MEASURES:
        points = [(str(row.get("case", "?")), v, is_flagged(row)) for _, row in ordered
                  if (v := _per_mille_etiv(row, stem)) is not None]
        if points:
            etiv_series.append((label, points))
    if etiv_series:
        plot = _strip_plot(etiv_series, "‰ of eTIV", "Hippocampus volume as a fraction of intracranial volume")
        parts.append(f'<img class="plot" alt="hippocampus volumes per case, per mille of eTIV" '
                     f'src="{_png_data_uri(plot)}">\n')
        parts.append('<p class="note">‰ of eTIV = 1000 &times; volume / estimated total intracranial volume '
                     "(head-size corrected; eTIV from the registration to the ICBM152 template, "
                     "<code>hipposeg.fullhead.icv</code>).</p>\n")
    else:
        parts.append('<p class="note">No eTIV in these rows (crops, or whole heads without it): head-size '
                     "corrected volumes are not shown.</p>\n")
    asym = [(str(row.get("case", "?")), ai, is_flagged(row)) for _, row in ordered
            if (ai := asymmetry_index(row)) is not None]
    if asym:
        parts.append("<h2>Left/right asymmetry</h2>\n")
        plot = _png_data_uri(_asymmetry_plot(asym))
        parts.append(f'<img class="plot" alt="asymmetry index per case" src="{plot}">\n')
        parts.append('<p class="note">Asymmetry index = 100 &times; (left &minus; right) / mean(left, right). '
                     "Positive: the left hippocampus is larger; red bars are flagged cases. In healthy adults the "
                     "right hippocampus is on average a few percent larger (Pedraza et al. 2004, meta-analysis).</p>\n")
    return "".join(parts)


def _table_section(ordered: list[tuple[int, Mapping]]) -> str:
    from hipposeg.confidence import predicted_dice_text

    has_etiv = any(_number(row.get("etiv_mm3")) for _, row in ordered)
    head = ["case", "QC", "predicted Dice"] + [f"{label} (mm³)" for _, label in MEASURES] + ["AI (%)"]
    if has_etiv:
        head += ["eTIV (cm³)", "left (‰ eTIV)", "right (‰ eTIV)"]
    note = ("<p class=\"note\">Least sure first: the cases flagged <code>low_confidence</code> (predicted Dice below "
            "the threshold of the stored mapping that predicted it), then the other flagged cases, then the rest; "
            "within each, by ascending predicted Dice, cases without one last. The predicted Dice (whole heads: left "
            "/ right) is an estimate from how well the model's members agree and how crisp their probabilities are "
            "(<code>hipposeg.confidence</code>), not a measurement.</p>\n")
    lines = ["<h2>All cases</h2>\n" + note + "<table>\n<tr>" + "".join(
        f'<th{" class=text" if i < 3 else ""}>{_e(h)}</th>' for i, h in enumerate(head)) + "</tr>"]
    for index, row in ordered:
        flagged = is_flagged(row)
        cells = [f'<td class="text"><a href="#case-{index}">{_e(row.get("case", "?"))}</a></td>',
                 f'<td class="text">{"low confidence" if is_low_confidence(row) else "flagged" if flagged else "ok"}'
                 f'</td>', f'<td class="text">{_e(predicted_dice_text(row))}</td>']
        cells += [f"<td>{_fmt(_volume(row, stem))}</td>" for stem, _ in MEASURES]
        cells.append(f"<td>{_fmt(asymmetry_index(row), 1)}</td>")
        if has_etiv:
            etiv = _number(row.get("etiv_mm3"))
            cells.append(f"<td>{_fmt(None if etiv is None else etiv / 1000.0)}</td>")
            cells += [f"<td>{_fmt(_per_mille_etiv(row, side), 2)}</td>" for side in ("left", "right")]
        lines.append(f'<tr{" class=flagged" if flagged else ""}>' + "".join(cells) + "</tr>")
    return "\n".join(lines) + "\n</table>\n"


def _rate_cell(rows: Sequence[Mapping], side: str) -> str:
    rate = _number(rows[0].get(f"rate_{side}_pct_per_year")) if rows else None
    se = _number(rows[0].get(f"rate_{side}_se_pct_per_year")) if rows else None
    return "" if rate is None else f"{rate:+.2f}" + ("" if se is None else f" &plusmn; {se:.2f}")


def _longitudinal_section(longitudinal: Mapping[str, Sequence[Mapping]]) -> str:
    """The rate table (one row per subject) and one trajectory plot per subject."""
    if not longitudinal:
        return ""
    head = ["subject", "sessions", "years", "rate left (%/y)", "rate right (%/y)", "change left (%)",
            "change right (%)", "QC"]
    lines = ["<h2>Change over time</h2>\n<p class=\"note\">Per subject with two or more sessions "
             "(<code>hipposeg longitudinal</code>: every session in one halfway space, change by Jacobian "
             "integration). Rate: the least-squares slope of ln(volume) on time, as % per year &plusmn; its "
             "standard error (three or more sessions); change: last session vs the first. Empty where the "
             "acquisition times are unknown.</p>\n<table>\n<tr>"
             + "".join(f'<th{" class=text" if i == 0 else ""}>{_e(h)}</th>' for i, h in enumerate(head)) + "</tr>"]
    plots = []
    for subject, rows in sorted(longitudinal.items()):
        rows = list(rows)
        times = [t for row in rows if (t := _number(row.get("time_years"))) is not None]
        flagged = [row for row in rows if is_flagged(row)]
        qc = "ok" if not flagged else "; ".join(sorted({f for row in flagged for f in _flag_list(row)})) or "flagged"
        cells = [f'<td class="text">{_e(subject)}</td>', f"<td>{len(rows)}</td>",
                 f"<td>{_fmt(max(times) - min(times), 1) if len(times) == len(rows) else ''}</td>",
                 f"<td>{_rate_cell(rows, 'left')}</td>", f"<td>{_rate_cell(rows, 'right')}</td>"]
        cells += [f"<td>{_fmt(_number(rows[-1].get(f'change_{side}_pct')), 2)}</td>" for side in ("left", "right")]
        cells.append(f'<td class="text">{_e(qc)}</td>')
        lines.append(f'<tr{" class=flagged" if flagged else ""}>' + "".join(cells) + "</tr>")
        plots.append(f'<img class="trajectory" alt="volume change over time of {_e(subject)}" '
                     f'src="{_png_data_uri(_trajectory_plot(subject, rows))}">')
    return ("\n".join(lines) + "\n</table>\n<h3>Trajectories</h3>\n<div class=\"trajectories\">"
            + "\n".join(plots) + "</div>\n")


def _cases_section(ordered: list[tuple[int, Mapping]], qc_pictures) -> str:
    parts = ["<h2>QC pictures</h2>\n<p class=\"note\">Each picture shows the scan with the mask outlines in three "
             "views, the uncertain voxels shaded in magenta and the predicted Dice in its title; in the order of the "
             "table above (least sure first).</p>\n"]
    for index, row in ordered:
        case = str(row.get("case", "?"))
        flagged = is_flagged(row)
        uri = _picture_uri(qc_pictures.get(case) if isinstance(qc_pictures, Mapping) else qc_pictures[index])
        facts = [f"left {_fmt(_volume(row, 'left'))} mm³", f"right {_fmt(_volume(row, 'right'))} mm³"]
        if (etiv := _number(row.get("etiv_mm3"))) is not None:
            facts.append(f"eTIV {etiv / 1000:,.0f} cm³")
        reasons = "".join(f"<li>{_e(reason)}</li>" for reason in flag_reasons(row))
        parts.append(
            f'<div class="card{" flagged" if flagged else ""}" id="case-{index}">'
            f'<h3>{_e(case)} &mdash; {"needs a look" if flagged else "QC ok"}</h3>'
            f'<div class="meta">{_e(row.get("input_path", ""))} &middot; {_e(" · ".join(facts))}</div>'
            + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
            + (f'<img alt="QC picture of {_e(case)}" src="{uri}">' if uri else "<p><em>no QC picture</em></p>")
            + "</div>\n")
    return "".join(parts)


def render_group_report(rows: Sequence[Mapping], *, command: str, model_version: str, qc_pictures,
                        title: str = "hipposeg group report",
                        longitudinal: Mapping[str, Sequence[Mapping]] | None = None) -> str:
    """The HTML text of the report (see :func:`write_group_report`)."""
    ordered = review_order(rows)
    flagged = [item for item in ordered if is_flagged(item[1])]
    body = (_header(len(rows), len(flagged), command, model_version, title) + _flagged_section(flagged)
            + _distribution_section(ordered) + _table_section(ordered) + _longitudinal_section(longitudinal or {})
            + _cases_section(ordered, qc_pictures))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def model_version(rows: Sequence[Mapping]) -> str:
    """``"hipposeg 0.8.0 (model.pt alone)"``: the package and the networks behind ``rows`` (their ``model`` and
    ``model_3d`` columns, file names only, as :func:`hipposeg.segment.describe_model` words them; every combination
    found)."""
    import hipposeg
    from hipposeg.segment import describe_model

    combos = sorted({(Path(str(r["model"])).name, Path(str(r["model_3d"])).name if r.get("model_3d") else None)
                     for r in rows if r.get("model")}, key=str)
    text = ", ".join(describe_model({"model": core, "model_3d": partner}) for core, partner in combos)
    return f"hipposeg {hipposeg.__version__} ({text or 'model ?'})"


def write_group_report(rows: Sequence[Mapping], out_html: str | Path, *, command: str, model_version: str,
                       qc_pictures: Mapping[str, str | Path | bytes] | Sequence, title: str = "hipposeg group report",
                       longitudinal: Mapping[str, Sequence[Mapping]] | None = None, overwrite: bool = False) -> Path:
    """Write one self-contained HTML report of ``rows`` (volume-table rows, optionally with ``etiv_mm3``).

    ``qc_pictures`` maps each case name to its QC picture (a PNG path or PNG bytes), or is a sequence parallel to
    ``rows``; a case without one is shown without. ``command`` and ``model_version`` are printed as given. The
    file is written atomically and never replaces an existing one unless ``overwrite``.
    """
    if not rows:
        raise ValueError("no rows: a group report needs at least one case")
    text = render_group_report(rows, command=command, model_version=model_version, qc_pictures=qc_pictures,
                               title=title, longitudinal=longitudinal)
    with atomic_path(out_html, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out_html)
