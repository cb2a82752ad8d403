"""Tests of hipposeg.report: volumes, QC flags, volume tables, reorientation and QC pictures."""

from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest

from hipposeg.errors import InputError, OutputExistsError
from hipposeg.report import (
    compute_reference_ranges,
    qc_views,
    reference_volume_ranges,
    reorient_to_ras,
    save_qc_png,
    volume_row,
    write_volume_tables,
)

LR = {1: "left", 2: "right"}
LR4 = {1: "left_anterior", 2: "left_posterior", 3: "right_anterior", 4: "right_posterior"}
AP = {0: "background", 1: "anterior", 2: "posterior"}
WIDE = {"low": 1.0, "high": 1e9}


def lia_affine(shape, zooms=(0.94, 0.94, 1.5)):
    """An LIA affine (i -> Left, j -> Inferior, k -> Anterior) centred on world (0, 0, 0)."""
    si, sj, sk = zooms
    aff = np.zeros((4, 4))
    aff[0, 0] = -si  # x (towards Right) decreases with i
    aff[2, 1] = -sj  # z (towards Superior) decreases with j
    aff[1, 2] = sk  # y (towards Anterior) increases with k
    aff[3, 3] = 1.0
    centre = (np.array(shape) - 1) / 2
    aff[:3, 3] = -aff[:3, :3] @ centre
    return aff


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
    row = volume_row("c", "p", blob_case(), np.eye(4), AP, WIDE, extra_flags=["registration_poor"])
    assert row["qc_flags"] == "registration_poor" and row["qc_ok"] is False
    seg = blob_case()
    seg[20, 20, 20] = 7
    row = volume_row("c", "p", seg, np.eye(4), AP, WIDE, extra_flags=("x",))
    assert row["qc_flags"] == "unknown_label;x"
    empty = volume_row("c", "p", np.zeros((9, 9, 9), np.uint8), np.eye(4), AP, WIDE, extra_flags=["x"])
    assert empty["qc_flags"] == "empty_mask;x"


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
    ranges = compute_reference_ranges(paths)
    assert (ranges["min"], ranges["median"], ranges["max"]) == (200.0, 400.0, 600.0)
    assert ranges["low"] == 100.0 and ranges["high"] == 900.0 and ranges["n_cases"] == 3


# -------------------------------------------------------------------------------------------- tables


def test_volume_tables_written_readable_and_not_overwritten(tmp_path):
    rows = [
        volume_row("a", "in/a.nii.gz", blob_case(), np.eye(4), AP, WIDE),
        volume_row("b", "in/b.nii.gz", blob_case(labels=LR), np.diag([1.0, 1.0, 1.5, 1.0]), LR, WIDE, ["reg_bad"]),
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
    assert table[1]["qc_flags"] == "reg_bad" and table[1]["qc_ok"] == "False"

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


# ---------------------------------------------------------------------------------------- orientation


def _lia_case():
    """An LIA volume (20 x 30 x 16, 0.94 x 0.94 x 1.5 mm) with a label in the patient's left, superior,
    anterior octant."""
    shape = (20, 30, 16)
    affine = lia_affine(shape)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[13:17, 4:9, 11:14] = 1  # high i = Left, low j = Superior, high k = Anterior
    return seg, affine


def test_reorient_lia_to_ras_puts_the_label_on_the_correct_side():
    seg, affine = _lia_case()
    world = (affine @ np.append(np.mean(np.nonzero(seg), axis=1), 1))[:3]
    assert world[0] < 0 and world[1] > 0 and world[2] > 0  # left, anterior, superior in world space

    ras, ras_affine, spacing = reorient_to_ras(seg, affine)
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    assert ras.shape == (20, 16, 30)
    assert spacing == pytest.approx((0.94, 1.5, 0.94))
    assert ras.sum() == seg.sum()
    centre = np.mean(np.nonzero(ras), axis=1)
    assert centre[0] < ras.shape[0] / 2  # x index grows towards Right: left half = low x
    assert centre[1] > ras.shape[1] / 2  # anterior
    assert centre[2] > ras.shape[2] / 2  # superior
    # same world point before and after
    assert np.allclose((ras_affine @ np.append(centre, 1))[:3], world)


def test_qc_views_show_anatomical_directions_and_true_aspect():
    seg, affine = _lia_case()
    image = np.random.default_rng(0).normal(100, 10, seg.shape)
    views = {v["name"]: v for v in qc_views(image, seg, affine, min_fov_mm=None)}

    def where(view):  # label centre as fractions of (width, height), height counted from the bottom
        rows, cols = np.nonzero(view["seg"])
        return cols.mean() / view["seg"].shape[1], rows.mean() / view["seg"].shape[0]

    axial, coronal, sagittal = views["Axial"], views["Coronal"], views["Sagittal"]
    assert axial["edges"] == ("L", "R", "P", "A")
    h, v = where(axial)
    assert h < 0.5 and v > 0.5  # patient's left on the left, anterior at the top
    assert coronal["edges"] == ("L", "R", "I", "S")
    h, v = where(coronal)
    assert h < 0.5 and v > 0.5  # left, superior
    assert sagittal["edges"] == ("P", "A", "I", "S")
    h, v = where(sagittal)
    assert h > 0.5 and v > 0.5  # anterior on the right, superior at the top

    # extents are in mm: 20 voxels x 0.94 mm wide (x), 16 x 1.5 mm tall (y) in the axial view
    x0, x1, y0, y1 = axial["extent"]
    assert x1 - x0 == pytest.approx(20 * 0.94) and y1 - y0 == pytest.approx(16 * 1.5)
    assert axial["image"].shape == (16, 20)
    assert sagittal["image"].shape == (30, 16)
    for view in views.values():  # every view cuts through the label
        assert view["seg"].any()


# ---------------------------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("shape", [(35, 50, 35), (96, 96, 64)])
def test_qc_png_written_valid_and_not_overwritten(tmp_path, shape):
    from matplotlib.image import imread

    rng = np.random.default_rng(1)
    image = rng.normal(100, 20, shape).astype(np.float32)
    seg = np.zeros(shape, dtype=np.uint8)
    c = [s // 2 for s in shape]
    seg[c[0] - 4 : c[0], c[1] - 6 : c[1] + 6, c[2] - 3 : c[2] + 3] = 1
    seg[c[0] : c[0] + 4, c[1] - 6 : c[1] + 6, c[2] - 3 : c[2] + 3] = 2
    affine = lia_affine(shape)
    out = tmp_path / "qc" / "case.png"
    assert save_qc_png(image, seg, affine, out, LR, title="case") == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(out)
    assert pixels.shape[:2] == (385, 990)  # 9 x 3.5 inches at 110 dpi
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.35) & (pixels[..., 2] < 0.35)
    assert red[int(0.17 * 385) : int(0.83 * 385)].any()  # the label-1 outline is drawn in the panels
    assert os.listdir(out.parent) == ["case.png"]

    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        save_qc_png(image, seg, affine, out, LR, title="case")
    assert out.read_bytes() == before and os.listdir(out.parent) == ["case.png"]


def test_qc_png_for_empty_mask(tmp_path):
    from matplotlib.image import imread

    image = np.random.default_rng(2).normal(size=(30, 30, 30))
    out = save_qc_png(image, np.zeros((30, 30, 30), np.uint8), np.eye(4), tmp_path / "e.png", AP, title="e")
    assert imread(out).shape[:2] == (385, 990)
