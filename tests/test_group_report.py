"""The group report: one self-contained HTML file, flagged cases first, every case, decodable images, escaped text."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest

from hipposeg.errors import OutputExistsError
from hipposeg.group_report import asymmetry_index, flag_reasons, is_flagged, load_segment_output, write_group_report

EVIL = "<script>alert(1)</script>"


def _png(seed: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    plt.imsave(buffer, np.random.default_rng(seed).random((20, 30)), format="png", cmap="gray")
    return buffer.getvalue()


def _row(case: str, left: float, right: float, flags: str = "", etiv: float | None = 1.45e6) -> dict:
    row = {"case": case, "input_path": f"/data/{case}.nii.gz", "voxel_size_mm": "1.00x1.00x1.00",
           "model": "model.pt",
           "volume_left_anterior_mm3": left * 0.55, "volume_left_posterior_mm3": left * 0.45,
           "volume_right_anterior_mm3": right * 0.55, "volume_right_posterior_mm3": right * 0.45,
           "volume_left_mm3": left, "volume_right_mm3": right, "volume_total_mm3": left + right,
           "qc_ok": not flags, "qc_flags": flags}
    if etiv is not None:
        row["etiv_mm3"] = etiv
    return row


@pytest.fixture
def rows() -> list[dict]:
    return [
        _row("sub-01", 3100, 3200),
        _row("sub-02", 2900, 3050, etiv=1.30e6),
        _row("sub-03", 900, 3300, flags="volume_out_of_range"),
        _row(EVIL, 3000, 2950),
        _row("sub-05", 3500, 3400, flags="registration_poor_fit;left_right_ratio", etiv=1.62e6),
        _row("sub-06", 3150, 3100, etiv=None),
    ]


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_is_self_contained_and_complete(tmp_path, rows):
    pictures = {row["case"]: _png(i) for i, row in enumerate(rows) if row["case"] != "sub-02"}
    out = write_group_report(rows, tmp_path / "report.html", command="hipposeg segment scans/ -o out --full-head",
                             model_version="hipposeg 0.4.0 (model.pt)", qc_pictures=pictures)
    text = out.read_text(encoding="utf-8")

    # self-contained: nothing fetched from anywhere, no scripts
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', text, flags=re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    assert all(src.startswith("data:image/png;base64,") or src.startswith("#")
               for src in re.findall(r'(?:src|href)="([^"]*)"', text))

    # every case has a card; flagged cases come first, with their reasons in words
    cards = re.findall(r'<div class="card( flagged)?" id="case-(\d+)"><h3>([^<]*) &mdash;', text)
    assert sorted(int(i) for _, i, _ in cards) == list(range(len(rows)))
    assert [bool(f) for f, _, _ in cards] == [True, True, False, False, False, False]
    assert {name for _, _, name in cards[:2]} == {"sub-03", "sub-05"}
    first_flagged = text.index("Cases that need a look")
    assert first_flagged < text.index("sub-03") < text.index("sub-01")
    assert "outside the reference range" in text  # the flag code explained
    assert "fits poorly" in text and "volume ratio is outside" in text
    assert "2 of 6 need a look" in text

    # the command and model version, text escaped
    assert "hipposeg segment scans/ -o out --full-head" in text and "hipposeg 0.4.0 (model.pt)" in text
    assert EVIL not in text and html_escaped(EVIL) in text

    # images: 5 QC pictures + volume plot + eTIV plot + asymmetry plot, all decodable PNGs
    images = _images(text)
    assert len(images) == 5 + 3
    import matplotlib.image as mpimg

    for png in images:
        array = mpimg.imread(io.BytesIO(png), format="png")
        assert array.ndim == 3 and min(array.shape[:2]) >= 20
    assert text.count("no QC picture") == 1


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_report_without_etiv_or_flags(tmp_path):
    rows = [_row(f"c{i}", 3000 + 50 * i, 3100 - 20 * i, etiv=None) for i in range(7)]
    out = write_group_report(rows, tmp_path / "r.html", command="hipposeg segment a/", model_version="0.4.0",
                             qc_pictures=[_png(i) for i in range(7)])
    text = out.read_text(encoding="utf-8")
    assert "all 7 cases passed QC" in text and "None: every case passed" in text
    assert "fraction of intracranial volume" not in text and "No eTIV in these rows" in text
    assert len(_images(text)) == 7 + 2


def test_report_is_never_overwritten_silently(tmp_path, rows):
    path = tmp_path / "report.html"
    path.write_text("keep me")
    with pytest.raises(OutputExistsError):
        write_group_report(rows, path, command="c", model_version="v", qc_pictures={})
    assert path.read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name != "report.html"]  # no temporary file left behind
    write_group_report(rows, path, command="c", model_version="v", qc_pictures={}, overwrite=True)
    assert path.read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError):
        write_group_report([], tmp_path / "empty.html", command="c", model_version="v", qc_pictures={})


def test_row_helpers():
    assert asymmetry_index({"volume_left_mm3": 3300, "volume_right_mm3": 3000}) == pytest.approx(100 * 300 / 3150)
    assert asymmetry_index({"volume_left_mm3": "", "volume_right_mm3": 3000}) is None
    assert is_flagged({"qc_flags": "touches_border"}) and is_flagged({"qc_ok": "False", "qc_flags": ""})
    assert not is_flagged({"qc_ok": True, "qc_flags": ""})
    # each code explained from the one table; a sentence written by an older hipposeg is shown as it is
    from hipposeg.qc_flags import QC_FLAGS

    assert flag_reasons({"qc_flags": "etiv_out_of_range;thick_slices"}) == [
        f"etiv_out_of_range: {QC_FLAGS['etiv_out_of_range']}", f"thick_slices: {QC_FLAGS['thick_slices']}"]
    assert flag_reasons({"qc_flags": "left: volume 1400 mm3 outside 1500-6500"}) == [
        "left: volume 1400 mm3 outside 1500-6500"]


def test_load_segment_output(tmp_path):
    import json

    rows = [_row("a", 3000, 3000), _row("b", 3000, 3000)]
    (tmp_path / "volumes.json").write_text(json.dumps(rows))
    (tmp_path / "a_qc.png").write_bytes(_png(0))
    loaded, pictures = load_segment_output(tmp_path)
    assert [r["case"] for r in loaded] == ["a", "b"] and list(pictures) == ["a"]


def test_report_has_the_rate_table_and_a_trajectory_per_subject(tmp_path, rows):
    """Longitudinal tables as the BIDS App writes them (TSV, read back by read_subject_tables): a rate table row and
    one trajectory plot per subject; a subject without times is plotted by session; flags reach the table."""
    import csv

    from hipposeg.longitudinal.bids import read_subject_tables

    def table(subject, times, left, right, flags=""):
        path = tmp_path / "out" / f"sub-{subject}" / "anat" / f"sub-{subject}_desc-hipposeg_longitudinal.tsv"
        path.parent.mkdir(parents=True)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(["session", "scan", "time_years", "change_left_pct", "change_right_pct",
                             "rate_left_pct_per_year", "rate_left_se_pct_per_year", "rate_right_pct_per_year",
                             "rate_right_se_pct_per_year", "qc_ok", "qc_flags"])
            for k, t in enumerate(times):
                writer.writerow([f"{k + 1}", f"scan{k}", t, left[k], right[k], -1.234, 0.321 if len(times) > 2
                                 else "n/a", -3.5, "n/a", "False" if flags and k else "True", flags if k else ""])

    table("01", [0.0, 1.0, 2.5], [0.0, -1.0, -3.1], [0.0, -0.5, -1.2])
    table("02", ["n/a", "n/a"], [0.0, -2.0], [0.0, 0.4], flags="alignment_poor_fit")
    longitudinal = read_subject_tables(tmp_path / "out")
    assert sorted(longitudinal) == ["01", "02"] and longitudinal["02"][0]["time_years"] is None
    out = write_group_report(rows, tmp_path / "r.html", command="c", model_version="v", qc_pictures={},
                             longitudinal=longitudinal)
    text = out.read_text(encoding="utf-8")
    section = text[text.index("<h2>Change over time</h2>"):text.index("<h2>QC pictures</h2>")]
    assert "-1.23 &plusmn; 0.32" in section and "+-3.50" not in section and "-3.50</td>" in section
    assert "<td>2.5</td>" in section and "<td>-3.10</td>" in section  # span in years, last change
    assert 'class=flagged' in section and "alignment_poor_fit" in section
    plots = [base64.b64decode(d) for d in re.findall(r'class="trajectory"[^>]*src="data:image/png;base64,([^"]+)"',
                                                      section)]
    assert len(plots) == 2 and all(p.startswith(b"\x89PNG") for p in plots)
    plain = write_group_report(rows, tmp_path / "plain.html", command="c", model_version="v", qc_pictures={})
    assert "Change over time" not in plain.read_text(encoding="utf-8")


def test_one_trajectory_plot_for_table_text_and_numbers():
    """plot_trajectory takes the rows as the BIDS TSV gives them (text, None for n/a) and as the pipeline does
    (numbers): years when every row has a time, else session order named by session; flagged rows crossed."""
    import math

    from matplotlib.figure import Figure

    from hipposeg.group_report import plot_trajectory

    text_rows = [{"session": "1", "time_years": "0", "change_left_pct": "0", "change_right_pct": "0"},
                 {"session": "2", "time_years": "1.5", "change_left_pct": "-2.0", "change_right_pct": None,
                  "qc_flags": "alignment_poor_fit"}]
    ax = Figure().add_subplot()
    plot_trajectory(ax, text_rows)
    left, right, cross = ax.get_lines()[:3]
    assert list(left.get_xdata()) == [0.0, 1.5] and list(left.get_ydata()) == [0.0, -2.0]
    assert math.isnan(right.get_ydata()[1]) and list(cross.get_xdata()) == [1.5] and cross.get_label() == "QC flag"
    assert ax.get_xlabel() == "years since baseline"
    number_rows = [{"scan": "a", "time_years": 0.0, "change_left_pct": 0.0, "change_right_pct": 0.0},
                   {"scan": "b", "time_years": None, "change_left_pct": -1.0, "change_right_pct": 0.5}]
    ax = Figure().add_subplot()
    plot_trajectory(ax, number_rows, dark=True)
    assert list(ax.get_lines()[0].get_xdata()) == [0, 1] and ax.get_xlabel() == "session (no acquisition times)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"] and len(ax.get_lines()) == 3  # no cross
    assert ax.get_facecolor()[:3] == (0.0, 0.0, 0.0)


def test_longitudinal_qc_picture_draws_its_trajectory_with_the_same_function(tmp_path, monkeypatch):
    import hipposeg.group_report as group_report
    from hipposeg.data.readers import Image
    from hipposeg.longitudinal.report import save_longitudinal_png

    calls = []
    plot = group_report.plot_trajectory
    monkeypatch.setattr(group_report, "plot_trajectory",
                        lambda ax, rows, **kw: calls.append((rows, kw)) or plot(ax, rows, **kw))
    rng = np.random.default_rng(0)
    probabilities = np.zeros((3, 8, 10, 6), np.float32)
    probabilities[0] = 1.0
    probabilities[:, 3:5, 2:8, 2:4] = [[[[0.0]]], [[[1.0]]], [[[0.0]]]]
    crops = [{side: Image(rng.random((8, 10, 6)).astype(np.float32), np.eye(4)) for side in ("left", "right")}
             for _ in range(2)]
    rows = [{"scan": f"s{t}", "time_years": float(t), "volume_left_mm3": 3000.0, "volume_right_mm3": 3100.0,
             "change_left_pct": -1.0 * t, "change_right_pct": 0.5 * t, "qc_flags": ""} for t in range(2)]
    out = save_longitudinal_png(tmp_path / "qc.png", crops, [{"left": probabilities, "right": probabilities}] * 2,
                                rows)
    assert out.read_bytes().startswith(b"\x89PNG") and calls == [(rows, {"dark": True})]


def test_low_confidence_cases_come_first_by_ascending_predicted_dice(tmp_path):
    from hipposeg.group_report import is_low_confidence, review_order

    def row(case, flags="", **dice):
        return {**_row(case, 3000, 3000, flags=flags), **dice}

    rows = [
        row("ok-0.90", predicted_dice=0.9),
        row("low-0.50", flags="low_confidence", predicted_dice="0.5"),  # a TSV cell: text
        row("head-low-left", flags="low_confidence_left", predicted_dice_left=0.4, predicted_dice_right=0.95),
        row("volume-none", flags="volume_out_of_range"),
        row("ok-none"),
        row("ok-0.80", predicted_dice=0.8, predicted_dice_left="", predicted_dice_right=""),
        row("volume-0.85", flags="volume_out_of_range", predicted_dice=0.85),
    ]
    expected = ["head-low-left", "low-0.50", "volume-0.85", "volume-none", "ok-0.80", "ok-0.90", "ok-none"]
    assert [r["case"] for _, r in review_order(rows)] == expected
    assert is_low_confidence(rows[2]) and not is_low_confidence(rows[3])

    text = write_group_report(rows, tmp_path / "r.html", command="c", model_version="v",
                              qc_pictures={}).read_text(encoding="utf-8")
    table = text[text.index("<h2>All cases</h2>"):text.index("</table>", text.index("<h2>All cases</h2>"))]
    assert "Least sure first" in table and "low_confidence" in table  # the order said in words
    assert [re.sub(r"<[^>]+>", "", c) for c in re.findall(r'<a href="#case-\d+">([^<]*)</a>', table)] == expected
    assert "L 0.40 / R 0.95" in table and ">0.50<" in table  # the predicted Dice column
    cards = re.findall(r'id="case-\d+"><h3>([^<]*) &mdash;', text)
    assert cards == expected  # the QC pictures in the table's order


def test_model_version_names_each_combination_of_networks_by_file_name():
    import hipposeg
    from hipposeg.group_report import model_version

    rows = [{"model": "/a/b/model.pt", "model_3d": "/a/b/model_3d.pt"}, {"model": "/c/model.pt", "model_3d": None},
            {"model": "/a/b/model.pt", "model_3d": "/x/model_3d.pt"}, {"case": "no model column"}]
    assert model_version(rows) == f"hipposeg {hipposeg.__version__} (model.pt + model_3d.pt, model.pt alone)"
    assert model_version([]) == f"hipposeg {hipposeg.__version__} (model ?)"
