"""``hipposeg longitudinal``: two moved copies of one head (2 mm, so the file stays fast) in both orders.

Checks the table's columns, inverse consistency on swapping the scans ((1 + c12)(1 + c21) = 1 within 0.001), a
near-zero change between copies of one head, masks in each scan's own grid, rates from --times; bad input and an
existing output are one line and exit code 2. The accuracy on simulated atrophy is measured by
``bench/longitudinal.py``; here the known-answer simulation is checked for what it promises.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hipposeg.data.readers import Image, image_to_sitk, read_image, sitk_to_image
from hipposeg.data.writers import write_nifti
from hipposeg.longitudinal.alignment import barycentre, symmetrise

COLUMNS = ["scan", "time_years", "volume_left_mm3", "volume_right_mm3", "change_left_pct", "change_right_pct",
           "rate_left_pct_per_year", "rate_left_se_pct_per_year", "rate_right_pct_per_year",
           "rate_right_se_pct_per_year"]
NEAR_ZERO_PCT = 3.0  # two 2 mm copies of one head, moved and regridded: bench/longitudinal.py measures 1 mm scans


def moved_copy(image: Image, degrees: float, shift_mm, spacing_mm: float, axes_code: str) -> Image:
    """``image`` rotated about its centre by ``degrees`` (about the axis (1, 1, 0)) and shifted, resampled linearly
    onto a grid of ``spacing_mm`` with the voxel axes of ``axes_code`` (e.g. "LPS")."""
    import SimpleITK as sitk

    from hipposeg.fullhead.evaluation import _axes_from_code

    src = image_to_sitk(Image(np.asarray(image.array, dtype=np.float32), image.affine))
    axes = _axes_from_code(axes_code)
    centre = image.affine[:3, :3] @ ((np.asarray(image.shape) - 1) / 2.0) + image.affine[:3, 3]
    extent = np.abs(image.affine[:3, :3]) @ np.asarray(image.shape, dtype=float)
    shape = np.ceil(np.abs(axes.T) @ extent / spacing_mm).astype(int) + 4
    affine = np.eye(4)
    affine[:3, :3] = axes * spacing_mm
    affine[:3, 3] = centre + np.asarray(shift_mm) - affine[:3, :3] @ ((shape - 1) / 2.0)
    reference = image_to_sitk(Image(np.zeros(tuple(shape), dtype=np.float32), affine))
    rotation = sitk.VersorRigid3DTransform()
    rotation.SetCenter([float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ (centre + np.asarray(shift_mm))])
    rotation.SetRotation((1.0, 1.0, 0.0), float(np.deg2rad(degrees)))
    rotation.SetTranslation([float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ -np.asarray(shift_mm)])
    return sitk_to_image(sitk.Resample(src, reference, rotation, sitk.sitkLinear, 0.0), source="nifti")


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    """Two 2 mm copies of colin27 and ``hipposeg longitudinal`` on them in both orders (once for the module)."""
    from hipposeg.cli import main

    tmp = tmp_path_factory.mktemp("longitudinal")
    head = read_image(data_root / "fullhead" / "colin27" / "t1.nii.gz")
    paths = []
    for name, degrees, shift, code in (("t0", 4.0, (3.0, -2.0, 1.0), "RAS"), ("t1", -6.0, (-4.0, 5.0, -3.0), "LPI")):
        copy = moved_copy(head, degrees, shift, 2.0, code)
        paths.append(write_nifti(tmp / f"{name}.nii.gz", copy.array, copy.affine))
    forward, backward = tmp / "forward", tmp / "backward"
    codes = (main(["longitudinal", *map(str, paths), "-o", str(forward), "--times", "0,1.5"]),
             main(["longitudinal", *map(str, paths[::-1]), "-o", str(backward), "--no-qc"]))
    return {"paths": paths, "forward": forward, "backward": backward, "codes": codes}


def _table(folder):
    with open(folder / "longitudinal.csv") as handle:
        return list(csv.DictReader(handle))


def test_table_columns_and_masks_in_each_scans_grid(runs):
    import nibabel as nib

    assert runs["codes"] == (0, 0)
    rows = _table(runs["forward"])
    assert list(rows[0])[: len(COLUMNS)] == COLUMNS
    assert [r["scan"] for r in rows] == ["t0", "t1"]
    assert float(rows[0]["change_left_pct"]) == 0.0 and float(rows[1]["time_years"]) == 1.5
    for row in rows:
        assert 1000 < float(row["volume_left_mm3"]) < 6000 and 1000 < float(row["volume_right_mm3"]) < 6000
    # two time points and known times: a rate (the change per 1.5 years, annualised), no standard error
    change = float(rows[1]["change_left_pct"]) / 100
    assert float(rows[1]["rate_left_pct_per_year"]) == pytest.approx(100 * ((1 + change) ** (1 / 1.5) - 1), abs=1e-4)
    assert rows[1]["rate_left_se_pct_per_year"] == ""
    for path in runs["paths"]:
        scan, mask = nib.load(str(path)), nib.load(str(runs["forward"] / f"{path.name[:-7]}_seg.nii.gz"))
        assert mask.shape == scan.shape and np.allclose(mask.affine, scan.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1, 2, 3, 4}
    summary = json.loads((runs["forward"] / "longitudinal.json").read_text())
    assert summary["baseline"] == "t0" and summary["alignment"]["pairs"][0]["inconsistency_mm"] < 1.5
    assert summary["times_source"] == "given" and summary["change"]["method"].startswith("jacobian")
    # every flag is a code of the one QC flag table; copies of one head are not flagged as misaligned
    from hipposeg.qc_flags import QC_FLAGS

    flags = [f for row in rows for f in row["qc_flags"].split(";") if f]
    assert set(flags) <= set(QC_FLAGS) and not [f for f in flags if f.startswith("alignment")]
    assert "alignment_flags" not in rows[0] and "soft_change_left_pct" in rows[0]
    assert (runs["forward"] / "longitudinal_qc.png").stat().st_size > 10_000
    assert not (runs["backward"] / "longitudinal_qc.png").exists()


def test_swapping_the_scans_gives_the_inverse_change_and_copies_show_almost_none(runs):
    forward, backward = _table(runs["forward"]), _table(runs["backward"])
    assert [r["scan"] for r in backward] == ["t1", "t0"]
    for side in ("left", "right"):
        c12, c21 = (float(t[1][f"change_{side}_pct"]) / 100 for t in (forward, backward))
        assert abs((1 + c12) * (1 + c21) - 1) < 1e-3, (side, c12, c21)
        assert abs(c12) * 100 < NEAR_ZERO_PCT, (side, c12)
        assert float(backward[0][f"volume_{side}_mm3"]) == pytest.approx(float(forward[1][f"volume_{side}_mm3"]),
                                                                          rel=1e-6)


def test_existing_outputs_are_not_replaced_without_overwrite(runs, cli):
    before = (runs["forward"] / "longitudinal.csv").read_text()
    result = cli("longitudinal", *runs["paths"], "-o", runs["forward"])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "exists; pass --overwrite" in result.stderr
    assert (runs["forward"] / "longitudinal.csv").read_text() == before


def test_bad_input_is_one_line_naming_the_file(tmp_path, cli, runs):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    result = cli("longitudinal", runs["paths"][0], broken, "-o", tmp_path / "out")
    assert result.returncode == 2 and str(broken) in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out" / "longitudinal.csv").exists()
    result = cli("longitudinal", runs["paths"][0], "-o", tmp_path / "out")
    assert result.returncode == 2 and "two or more scans" in result.stderr
    result = cli("longitudinal", *runs["paths"], "-o", tmp_path / "out", "--times", "0,1,2")
    assert result.returncode == 2 and "--times" in result.stderr


def test_bids_subject_with_two_sessions_gets_the_longitudinal_table(runs, tmp_path, cli):
    """The BIDS App's participant level on one subject with two sessions (the two copies): its longitudinal TSV, with
    times from sessions.tsv, measures what ``hipposeg longitudinal`` measured on the same scans."""
    import shutil

    root = tmp_path / "ds"
    for session, path in zip(("1", "2"), runs["paths"]):
        anat = root / "sub-01" / f"ses-{session}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(path, anat / f"sub-01_ses-{session}_T1w.nii.gz")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    (root / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-1\t2020-01-01T10:00:00\nses-2\t2021-07-02T22:00:00\n")
    out = tmp_path / "deriv"
    result = cli("bids", root, out, "participant", "--quiet")
    assert result.returncode == 0, result.stderr
    with open(out / "sub-01" / "anat" / "sub-01_desc-hipposeg_longitudinal.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["session"] for r in rows] == ["1", "2"] and list(rows[0])[1:len(COLUMNS) + 1] == COLUMNS
    assert float(rows[1]["time_years"]) == pytest.approx(1.5, abs=0.01)
    forward = _table(runs["forward"])
    for side in ("left", "right"):
        assert float(rows[1][f"change_{side}_pct"]) == pytest.approx(float(forward[1][f"change_{side}_pct"]),
                                                                     abs=1e-3)
    assert (out / "sub-01" / "figures" / "sub-01_desc-hipposeg_longitudinal.png").is_file()
    assert not list(out.glob(".sub-01*"))  # the work folder is gone
    again = cli("bids", root, out, "participant", "--quiet")
    assert again.returncode == 0 and "longitudinal: sub-01: 2 sessions, already done" in again.stderr


def test_halfway_space_and_symmetrised_pairs_are_exact():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(3)

    def rigid():
        m = np.eye(4)
        m[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) * 0.2).as_matrix()
        m[:3, 3] = rng.normal(size=3) * 10
        return m

    a, b, c = rigid(), rigid(), rigid()
    half = barycentre([a, b])
    np.testing.assert_allclose((np.linalg.inv(half) @ a) @ (np.linalg.inv(half) @ b), np.eye(4), atol=1e-10)
    np.testing.assert_allclose(barycentre([c @ a, c @ b]), c @ half, atol=1e-10)  # frame-independent
    np.testing.assert_allclose(symmetrise(a, b) @ symmetrise(b, a), np.eye(4), atol=1e-10)


def test_simulated_atrophy_changes_the_label_by_the_asked_fraction():
    from hipposeg.longitudinal.simulation import label_volume_mm3, simulate_atrophy

    # a synthetic head: two ellipsoid "hippocampi" in a 1 mm box, on a textured background
    grid = np.indices((70, 50, 40), dtype=float)
    labels = np.zeros((70, 50, 40), dtype=np.uint8)
    for value, cx in ((1, 20), (2, 50)):
        labels[((grid[0] - cx) / 6) ** 2 + ((grid[1] - 25) / 14) ** 2 + ((grid[2] - 20) / 5) ** 2 <= 1] = value
    image = Image((labels > 0) * 100.0, np.eye(4))
    truth = Image(labels, np.eye(4))
    warped, _, info = simulate_atrophy(image, truth, {"left": -0.04, "right": -0.01})
    assert info["true_change"]["left"] == pytest.approx(-0.04, abs=5e-4)
    assert info["true_change"]["right"] == pytest.approx(-0.01, abs=5e-4)
    assert warped.shape == image.shape and np.allclose(warped.affine, image.affine)
    # the image's bright blobs shrink as much (their intensity sums on the 1 mm grid, within 0.4 percentage points)
    for half, change in ((slice(0, 35), -0.04), (slice(35, 70), -0.01)):
        assert warped.array[half].sum() / image.array[half].sum() - 1 == pytest.approx(change, abs=4e-3)
    assert label_volume_mm3(truth, "left") == pytest.approx((labels == 1).sum(), rel=0.02)


def test_acquisition_dates_from_dicom_headers_and_nifti_sidecars(data_root, tmp_path):
    """Without --times: the DICOM series' dates (study1: StudyDate 2020-01-19 01:03:13; study2: AcquisitionDate
    2020-01-21, its time from SeriesTime 01:06:43), a NIfTI's sidecar AcquisitionDateTime; one scan without a date
    and there are no times."""
    import datetime

    from hipposeg.longitudinal.acquisition_times import acquisition_time, acquisition_times

    dicoms = [read_image(data_root / "dicom_hcrop" / s) for s in ("study1_hcrop", "study2_hcrop")]
    assert acquisition_time(dicoms[0]) == datetime.datetime(2020, 1, 19, 1, 3, 13)
    assert acquisition_time(dicoms[1]) == datetime.datetime(2020, 1, 21, 1, 6, 43)
    days = (datetime.datetime(2020, 1, 21, 1, 6, 43) - datetime.datetime(2020, 1, 19, 1, 3, 13)).total_seconds() / 86400
    assert acquisition_times(dicoms[::-1]) == pytest.approx([days / 365.25, 0.0], abs=1e-9)
    niftis = []
    for name, stamp in (("a", "2019-03-02T09:30:00"), ("b", None), ("c", "2021-09-01T10:00:00.5")):
        path = write_nifti(tmp_path / f"{name}.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
        meta = {"AcquisitionDateTime": stamp} if stamp else {"AcquisitionDate": "2020-03-02", "AcquisitionTime": "09:30:00"}
        (tmp_path / f"{name}.json").write_text(json.dumps(meta))
        niftis.append(read_image(path))
    years = acquisition_times(niftis)
    assert years[0] == 0.0 and years[1] == pytest.approx(366 / 365.25) and years[2] == pytest.approx(
        (datetime.datetime(2021, 9, 1, 10, 0, 0, 500000) - datetime.datetime(2019, 3, 2, 9, 30)).total_seconds()
        / 86400 / 365.25)
    (tmp_path / "b.json").write_text(json.dumps({"SeriesDescription": "no date"}))
    assert acquisition_times(niftis) is None and acquisition_times([dicoms[0], niftis[1]]) is None


@pytest.mark.parametrize("text, expected", [
    ("2020-01-01", (2020, 1, 1)),
    ("2020-01-01T10:00", (2020, 1, 1, 10)),
    ("2020-01-01T10:00:30", (2020, 1, 1, 10, 0, 30)),
    ("2020-01-01T10:00:30.25", (2020, 1, 1, 10, 0, 30, 250000)),
    ("2020-01-01T10:00:30.1234567", (2020, 1, 1, 10, 0, 30, 123456)),  # more digits than microseconds
    ("2020-01-01T10:00:30Z", (2020, 1, 1, 10, 0, 30)),
    ("2020-01-01T10:00:30.5+01:00", (2020, 1, 1, 9, 0, 30, 500000)),  # to UTC
    ("2020-01-01T23:30:00-01:30", (2020, 1, 2, 1, 0)),
    ("2020-01-01 10:00:00+0200", (2020, 1, 1, 8)),
    ("20200101T100000", (2020, 1, 1, 10)),
    (" 2020-01-01T10:00:00 ", (2020, 1, 1, 10)),
    ("n/a", None), ("", None), (None, None), ("2020-13-01", None), ("yesterday", None),
    ("2020-01-01T10:00:00+5", None),
])
def test_acquisition_time_text_is_iso_8601_in_utc_without_tzinfo(text, expected):
    import datetime

    from hipposeg.longitudinal.acquisition_times import parse_acquisition_time

    stamp = parse_acquisition_time(text)
    assert stamp == (None if expected is None else datetime.datetime(*expected))
    assert stamp is None or stamp.tzinfo is None


def test_bids_session_times_mix_offsets_and_local_times(tmp_path):
    """sessions.tsv with a UTC ('Z'), an offset and a plain time, a session only in its scans.tsv (a date): years
    since the first, no TypeError from comparing times with and without an offset; a missing time: None."""
    from pathlib import Path
    from types import SimpleNamespace

    from hipposeg.longitudinal.bids import session_times

    subject = tmp_path / "sub-01"
    (subject / "ses-4").mkdir(parents=True)
    (subject / "sub-01_sessions.tsv").write_text("session_id\tacq_time\nses-1\t2020-01-01T10:00:00Z\n"
                                                 "ses-2\t2020-01-01T12:00:00+02:00\nses-3\t2021-01-01T10:00:00\n"
                                                 "ses-4\tn/a\n")
    (subject / "ses-4" / "sub-01_ses-4_scans.tsv").write_text("filename\tacq_time\n"
                                                              "anat/sub-01_ses-4_T1w.nii.gz\t2022-01-01\n")
    images = [SimpleNamespace(session=s, path=Path(f"anat/sub-01_ses-{s}_T1w.nii.gz")) for s in "1234"]
    years = session_times(tmp_path, "01", images)
    assert years == pytest.approx([0.0, 0.0, 366 / 365.25, (731 - 10 / 24) / 365.25])
    (subject / "ses-4" / "sub-01_ses-4_scans.tsv").write_text("filename\tacq_time\n")
    assert session_times(tmp_path, "01", images) is None


def test_sidecar_times_with_an_offset_are_taken_in_utc(tmp_path):
    """Sidecars with and without an offset compare (no TypeError); the offset counts."""
    from hipposeg.longitudinal.acquisition_times import acquisition_times

    images = []
    for name, stamp in (("a", "2020-01-01T10:00:00"), ("b", "2020-01-02T10:00:00+12:00")):
        path = write_nifti(tmp_path / f"{name}.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
        (tmp_path / f"{name}.json").write_text(json.dumps({"AcquisitionDateTime": stamp}))
        images.append(read_image(path))
    assert acquisition_times(images) == pytest.approx([0.0, 0.5 / 365.25])


def test_jacobian_change_recovers_a_known_contraction_and_is_antisymmetric():
    """Two synthetic 1 mm crops, the second a uniformly scaled copy (volume -3 %) of the first: the symmetric
    Jacobian integral finds the change, and swapping the crops gives exactly the inverse."""
    import SimpleITK as sitk

    from hipposeg.longitudinal.deformation import pair_log_ratio

    rng = np.random.default_rng(0)
    shape = (36, 50, 42)
    texture = ndimage_smooth(rng.normal(size=shape), 2.0)
    grid = np.indices(shape, dtype=float)
    centre = (np.asarray(shape) - 1) / 2.0
    blob = (((grid - centre[:, None, None, None]) / np.array([7, 15, 6])[:, None, None, None]) ** 2).sum(0) <= 1
    a = (100 + 30 * blob + 200 * texture).astype(np.float32)
    scale = (1 - 0.03) ** (1 / 3)
    transform = sitk.ScaleTransform(3, [1 / scale] * 3)  # reads a at x / scale: the content shrinks by scale
    transform.SetCenter([float(v) for v in centre])  # sitk x = the array's first axis
    image = sitk.GetImageFromArray(np.ascontiguousarray(a.transpose(2, 1, 0)))
    b = sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkBSpline, 0.0)).transpose(2, 1, 0)
    weights = ndimage_smooth(blob.astype(float), 1.0)
    forward = pair_log_ratio(a, b, weights, weights)
    backward = pair_log_ratio(b, a, weights, weights)
    assert backward["log_ratio"] == -forward["log_ratio"]
    assert 100 * np.expm1(forward["log_ratio"]) == pytest.approx(-3.0, abs=0.4)


def ndimage_smooth(array, sigma):
    from scipy import ndimage

    return ndimage.gaussian_filter(array, sigma)


def test_a_scan_of_another_head_is_flagged_as_a_failed_alignment(runs, data_root):
    """colin27 against CANDI 030 (both 2 mm copies): the pair's mutual information after rigid alignment is far from
    that of two copies of one head (measured -0.10 vs -1.69), so both scans get ``alignment_poor_fit``."""
    from hipposeg.fullhead.registration import register_to_template
    from hipposeg.longitudinal.alignment import ALIGNMENT_FLAGS, align_scans
    from hipposeg.qc_flags import ALIGNMENT_METRIC_ABOVE, QC_FLAGS

    assert set(ALIGNMENT_FLAGS) <= set(QC_FLAGS)
    scans = [read_image(runs["paths"][0]),
             moved_copy(read_image(data_root / "fullhead" / "candi030" / "t1.nii.gz"), 4.0, (3.0, -2.0, 1.0), 2.0, "RAS")]
    alignment = align_scans(scans, [register_to_template(scan).matrix_ras for scan in scans])
    assert alignment.pairs[0]["metric"] > ALIGNMENT_METRIC_ABOVE
    assert all("alignment_poor_fit" in flags for flags in alignment.flags)
