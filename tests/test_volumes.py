"""Tests of hipposeg.volumes (volumes, QC flags, reference ranges, volume tables, the CSV writer) and of the
reference-range builder tools/volume_ranges.py."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from label_fixture import AP, LR, LR4, lia_affine

from hipposeg.errors import InputError, OutputExistsError
from hipposeg.volumes import reference_volume_ranges, rows_to_csv, volume_row, write_volume_tables

WIDE = {"low": 1.0, "high": 1e9}
VOLUME_RANGES_SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "volume_ranges.py"


def _volume_ranges_script():
    """tools/volume_ranges.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("volume_ranges", VOLUME_RANGES_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blob_case(shape=(40, 40, 40), labels=AP):
    """A label map with one box per label well inside the volume."""
    seg = np.zeros(shape, dtype=np.uint8)
    for n, value in enumerate(v for v in sorted(labels) if v != 0):
        seg[10 + 4 * n : 13 + 4 * n, 12:20, 15:22] = value
    return seg


# ------------------------------------------------------------------------------------------- volumes


def test_volume_is_voxel_count_times_voxel_volume_for_anisotropic_affine():
    affine = lia_affine((30, 30, 20), zooms=(0.94, 0.94, 1.5))
    seg = np.zeros((30, 30, 20), dtype=np.uint8)
    seg[5:12, 6:15, 4:9] = 1  # 7*9*5 = 315
    seg[13:20, 6:10, 4:7] = 2  # 7*4*3 = 84
    row = volume_row("c1", "in/c1.nii.gz", seg, affine, AP)
    vv = abs(np.linalg.det(affine[:3, :3]))
    assert vv == pytest.approx(0.94 * 0.94 * 1.5)
    assert row["volume_anterior_mm3"] == 315 * vv
    assert row["volume_posterior_mm3"] == 84 * vv
    assert row["volume_total_mm3"] == 399 * vv
    assert row["voxel_size_mm"] == "0.94x0.94x1.50"
    assert row["case"] == "c1" and row["input_path"] == "in/c1.nii.gz"
    assert "volume_left_mm3" not in row and "volume_right_mm3" not in row
    assert "volume_background_mm3" not in row


def test_sides_are_detected_and_summed():
    seg = np.zeros((40, 40, 40), dtype=np.uint8)
    seg[5:8, 10:20, 10:20] = 1  # 300
    seg[8:10, 10:20, 10:20] = 2  # 200
    seg[25:30, 10:20, 10:20] = 3  # 500
    seg[30:31, 10:20, 10:20] = 4  # 100
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    row = volume_row("c", "p", seg, affine, LR4)
    assert row["volume_left_anterior_mm3"] == 600.0
    assert row["volume_left_posterior_mm3"] == 400.0
    assert row["volume_left_mm3"] == 1000.0
    assert row["volume_right_mm3"] == 1200.0
    assert row["volume_total_mm3"] == 2200.0

    row2 = volume_row("c", "p", np.where(seg > 2, 2, np.where(seg > 0, 1, 0)), affine, {"1": "left", "2": "right"})
    assert row2["volume_left_mm3"] == 1000.0 and row2["volume_right_mm3"] == 1200.0
    assert row2["volume_total_mm3"] == 2200.0


# ------------------------------------------------------------------------------------------ QC flags


def test_normal_case_has_no_flags():
    row = volume_row("ok", "p", blob_case(), np.eye(4), AP, reference_ranges=WIDE)
    assert row["qc_flags"] == "" and row["qc_ok"] is True


def test_empty_mask_flag():
    row = volume_row("e", "p", np.zeros((20, 20, 20), np.uint8), np.eye(4), AP, reference_ranges=WIDE)
    assert row["qc_flags"] == "empty_mask" and row["qc_ok"] is False
    assert row["volume_total_mm3"] == 0.0


def test_volume_out_of_range_on_total():
    seg = blob_case()  # 2 labels x 168 voxels
    assert volume_row("c", "p", seg, np.eye(4), AP, {"low": 300, "high": 400})["qc_ok"]
    row = volume_row("c", "p", seg, np.eye(4), AP, {"low": 400, "high": 1000})
    assert row["qc_flags"] == "volume_out_of_range" and not row["qc_ok"]
    row = volume_row("c", "p", seg, np.eye(4), AP, {"low": 10, "high": 300})
    assert row["qc_flags"] == "volume_out_of_range"


def test_volume_out_of_range_is_checked_per_side():
    seg = np.zeros((40, 40, 40), dtype=np.uint8)
    seg[5:10, 10:20, 10:20] = 1  # left 500
    seg[25:30, 10:20, 10:20] = 2  # right 500
    ranges = {"low": 400, "high": 600}  # each side, not the total (1000)
    assert volume_row("c", "p", seg, np.eye(4), LR, ranges)["qc_flags"] == ""
    seg[25:30, 10:20, 10:20] = 0
    seg[25:27, 10:20, 10:20] = 2  # right 200, total 700: would pass a total check
    row = volume_row("c", "p", seg, np.eye(4), LR, {"low": 400, "high": 800})
    assert row["qc_flags"] == "volume_out_of_range"


@pytest.mark.parametrize("face", range(6))
def test_touches_border_on_each_face(face):
    seg = blob_case()
    axis, end = divmod(face, 2)
    index = [slice(15, 18)] * 3
    index[axis] = 0 if end == 0 else -1
    seg[tuple(index)] = 1
    row = volume_row("c", "p", seg, np.eye(4), AP, WIDE)
    assert row["qc_flags"] == "touches_border" and not row["qc_ok"]


def test_extra_flags_are_appended_and_unknown_labels_flagged():
    row = volume_row("c", "p", blob_case(), np.eye(4), AP, WIDE, extra_flags=["registration_poor_fit"])
    assert row["qc_flags"] == "registration_poor_fit" and row["qc_ok"] is False
    seg = blob_case()
    seg[20, 20, 20] = 7
    row = volume_row("c", "p", seg, np.eye(4), AP, WIDE, extra_flags=("left_right_ratio",))
    assert row["qc_flags"] == "unknown_label;left_right_ratio"
    empty = volume_row("c", "p", np.zeros((9, 9, 9), np.uint8), np.eye(4), AP, WIDE,
                       extra_flags=["hippocampus_missing_left", "hippocampus_missing_left"])
    assert empty["qc_flags"] == "empty_mask;hippocampus_missing_left"


def test_flags_are_codes_of_the_one_table():
    """qc_flags holds codes only: a sentence (as whole-head QC wrote before 0.6.2) is refused, and every code has
    its meaning in hipposeg.qc_flags.QC_FLAGS, which --help and the docs print."""
    from hipposeg.qc_flags import QC_FLAGS, help_text, markdown_table

    with pytest.raises(ValueError, match="codes"):
        volume_row("c", "p", blob_case(), np.eye(4), AP, WIDE, extra_flags=["left: volume 1400 mm3 outside 1500-6500"])
    seg = blob_case()
    seg[0, 0, 0], seg[20, 20, 20] = 1, 9
    row = volume_row("c", "p", seg, np.diag([1.0, 1.0, 3.0, 1.0]), AP, {"low": 1, "high": 2})
    assert row["qc_flags"].split(";") == ["volume_out_of_range", "touches_border", "unknown_label", "thick_slices"]
    assert set(row["qc_flags"].split(";")) <= set(QC_FLAGS)
    assert all(code.isidentifier() and code == code.lower() for code in QC_FLAGS)
    text, table = help_text(), markdown_table()
    assert all(code in text and f"`{code}`" in table for code in QC_FLAGS)
    assert all(len(line) <= 100 for line in text.splitlines())


def test_volume_flag_meaning_quotes_the_one_stored_range():
    from hipposeg.qc_flags import QC_FLAGS

    ranges = reference_volume_ranges()
    assert f"{ranges['low']:.0f}-{ranges['high']:.0f} mm3" in QC_FLAGS["volume_out_of_range"]
    assert "1191-6602 mm3" in QC_FLAGS["volume_out_of_range"]


# ---------------------------------------------------------------------------------- reference ranges


def test_stored_reference_ranges_are_sane():
    ranges = reference_volume_ranges()
    assert ranges["n_cases"] == 208
    assert ranges["low"] < ranges["p1"] <= ranges["median"] <= ranges["p99"] < ranges["high"]
    assert ranges["low"] == pytest.approx(ranges["low_factor"] * ranges["min"])
    assert ranges["high"] == pytest.approx(ranges["high_factor"] * ranges["max"])
    assert 1000 < ranges["median"] < 6000  # one adult hippocampus, mm3
    with pytest.raises(InputError):
        reference_volume_ranges("no_such_dataset")


def test_compute_reference_ranges(tmp_path):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    paths = []
    for n, count in enumerate((100, 200, 300)):
        seg = np.zeros((20, 20, 20), np.uint8)
        seg.reshape(-1)[:count] = 1 + n % 2
        path = tmp_path / f"lab{n}.nii.gz"
        nib.save(nib.Nifti1Image(seg, affine), str(path))
        paths.append(path)
    ranges = _volume_ranges_script().compute_reference_ranges(paths)
    assert (ranges["min"], ranges["median"], ranges["max"]) == (200.0, 400.0, 600.0)
    assert ranges["low"] == 100.0 and ranges["high"] == 900.0 and ranges["n_cases"] == 3


# -------------------------------------------------------------------------------------------- tables


def test_volume_tables_written_readable_and_not_overwritten(tmp_path):
    rows = [
        volume_row("a", "in/a.nii.gz", blob_case(), np.eye(4), AP, WIDE),
        volume_row("b", "in/b.nii.gz", blob_case(labels=LR), np.diag([1.0, 1.0, 1.5, 1.0]), LR, WIDE,
                  ["registration_poor_fit"]),
    ]
    rows[1]["registration_ncc"] = np.float32(0.5)
    csv_path, json_path = write_volume_tables(rows, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["volumes.csv", "volumes.json"]  # no temp files left

    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        table = list(reader)
    assert header == [
        "case", "input_path", "voxel_size_mm", "volume_anterior_mm3", "volume_posterior_mm3",
        "volume_left_mm3", "volume_right_mm3", "volume_total_mm3", "registration_ncc", "qc_ok", "qc_flags",
    ]
    assert [r["case"] for r in table] == ["a", "b"]
    assert float(table[0]["volume_total_mm3"]) == rows[0]["volume_total_mm3"]
    assert table[0]["volume_left_mm3"] == "" and table[1]["volume_anterior_mm3"] == ""
    assert table[1]["qc_flags"] == "registration_poor_fit" and table[1]["qc_ok"] == "False"

    loaded = json.loads(json_path.read_text())
    assert list(loaded[0]) == header
    assert loaded[1]["volume_right_mm3"] == rows[1]["volume_right_mm3"]
    assert loaded[0]["volume_left_mm3"] is None and loaded[1]["registration_ncc"] == 0.5
    assert loaded[0]["qc_ok"] is True

    before = (csv_path.read_bytes(), json_path.read_bytes())
    with pytest.raises(OutputExistsError):
        write_volume_tables(rows[:1], tmp_path)
    assert (csv_path.read_bytes(), json_path.read_bytes()) == before
    assert sorted(os.listdir(tmp_path)) == ["volumes.csv", "volumes.json"]

    write_volume_tables(rows[:1], tmp_path, overwrite=True)
    assert len(json.loads(json_path.read_text())) == 1
    assert sorted(os.listdir(tmp_path)) == ["volumes.csv", "volumes.json"]


def test_volume_tables_refuse_when_only_one_file_exists(tmp_path):
    (tmp_path / "volumes.json").write_text("keep")
    with pytest.raises(OutputExistsError):
        write_volume_tables([volume_row("a", "p", blob_case(), np.eye(4), AP)], tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["volumes.json"]
    assert (tmp_path / "volumes.json").read_text() == "keep"


def test_volume_ranges_script_writes_keeps_other_datasets_and_refuses_overwrite(tmp_path, capsys):
    script = _volume_ranges_script()
    for n, count in enumerate((100, 300)):
        seg = np.zeros((10, 10, 10), np.uint8)
        seg.reshape(-1)[:count] = 1
        nib.save(nib.Nifti1Image(seg, np.eye(4)), str(tmp_path / f"lab{n}.nii.gz"))
    out = tmp_path / "ranges.json"
    out.write_text(json.dumps({"about": "old", "datasets": {"other": {"low": 1, "high": 2}}}))
    labels = str(tmp_path / "lab*.nii.gz")
    assert script.main(["--labels", labels, "--dataset", "toy", "-o", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert script.main(["--labels", labels, "--dataset", "toy", "-o", str(out), "--overwrite"]) == 0
    stored = json.loads(out.read_text())
    assert stored["datasets"]["other"] == {"low": 1, "high": 2}
    toy = stored["datasets"]["toy"]
    assert (toy["min"], toy["max"], toy["low"], toy["high"]) == (100.0, 300.0, 50.0, 450.0)
    assert toy["command"].startswith("python tools/volume_ranges.py --labels")
    (tmp_path / "bad.nii.gz").write_text("not an image")
    assert script.main(["--labels", str(tmp_path / "bad.nii.gz"), "-o", str(tmp_path / "new.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.nii.gz" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new.json").exists()


# ---------------------------------------------------------------------------------------- CSV writer


def test_rows_to_csv_unions_columns_and_formats_cells():
    rows = [{"case": "a", "dice": 0.123456789, "ok": True}, {"case": "b", "hd95": np.float32(1.5), "note": None}]
    table = list(csv.reader(rows_to_csv(rows).splitlines()))
    assert table == [["case", "dice", "ok", "hd95", "note"], ["a", "0.123457", "True", "", ""],
                     ["b", "", "", "1.5", ""]]
    full = list(csv.DictReader(rows_to_csv(rows, columns=["dice", "case"], significant_digits=None).splitlines()))
    assert list(full[0]) == ["dice", "case"] and float(full[0]["dice"]) == 0.123456789
    assert rows_to_csv([{"hd95": float("nan")}]).splitlines()[1] == "nan"  # undefined HD95 stays visible


@pytest.mark.parametrize("spacing, flagged", [((1, 1, 1), False), ((0.8, 0.8, 2.0), False), ((1, 1, 2.5), True),
                                              ((0.9, 3.0, 0.9), True)])
def test_slices_thicker_than_measured_are_flagged(spacing, flagged):
    row = volume_row("c", "p", blob_case(), np.diag([*spacing, 1.0]), AP, None)
    assert ("thick_slices" in row["qc_flags"].split(";")) is flagged
    assert row["qc_ok"] is not flagged


def test_label_counts_equal_numpy_unique():
    """label_counts counts the foreground only (a head is almost all background); the same as np.unique on label
    maps with and without background, on bool and float maps."""
    from hipposeg.volumes import label_counts

    rng = np.random.default_rng(0)
    cases = [rng.choice([0, 1, 2, 3, 4], size=(20, 21, 22), p=[0.9, 0.04, 0.03, 0.02, 0.01]).astype(np.uint8),
             np.zeros((4, 4, 4), np.uint8), np.full((3, 3), 2, np.uint16), rng.random((5, 5)) > 0.5]
    for seg in cases:
        values, counts = np.unique(seg.astype(np.int64), return_counts=True)
        assert label_counts(seg) == {int(v): int(c) for v, c in zip(values, counts)}
    assert label_counts(np.array([[2.2, 0.4], [-1.0, 0.0]])) == {-1: 1, 0: 2, 2: 1}
