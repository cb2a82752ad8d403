"""``hipposeg segment`` / ``evaluate`` with the shipped model: outputs, volumes, DICOM, TTA, and bad input."""

from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest

from conftest import BUNDLE

MODEL = BUNDLE / "models" / "model.pt"


@pytest.fixture(scope="module")
def segmenter():
    from hipposeg.segmenter import load_segmenter

    assert MODEL.is_file(), "the shipped model bundles/hipposeg/models/model.pt is missing"
    return load_segmenter()


def _snapshot(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}


def test_segment_writes_masks_qc_and_volume_table(msd, tmp_path, cli):
    inputs = [msd / "imagesTr" / f"hippocampus_{c}.nii.gz" for c in ("001", "003")]
    result = cli("segment", *map(str, inputs), "-o", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "segmented 2 case(s), 0 failed" in result.stdout
    rows = list(csv.DictReader(open(tmp_path / "out" / "volumes.csv")))
    assert [r["case"] for r in rows] == ["hippocampus_001", "hippocampus_003"]
    assert all(r["model"] == str(MODEL.resolve()) for r in rows)
    assert json.loads((tmp_path / "out" / "volumes.json").read_text())[0]["case"] == "hippocampus_001"
    for src, row in zip(inputs, rows):
        seg = nib.load(tmp_path / "out" / f"{row['case']}_seg.nii.gz")
        ref = nib.load(src)
        assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine) and seg.get_data_dtype() == np.uint8
        labels = np.asanyarray(seg.dataobj)
        voxel = abs(np.linalg.det(seg.affine[:3, :3]))
        assert float(row["volume_anterior_mm3"]) == pytest.approx((labels == 1).sum() * voxel)
        assert float(row["volume_posterior_mm3"]) == pytest.approx((labels == 2).sum() * voxel)
        assert float(row["volume_total_mm3"]) == pytest.approx((labels > 0).sum() * voxel)
        assert (tmp_path / "out" / f"{row['case']}_qc.png").stat().st_size > 10_000
        truth = np.asanyarray(nib.load(str(src).replace("imagesTr", "labelsTr")).dataobj)
        assert 2 * ((labels > 0) & (truth > 0)).sum() / ((labels > 0).sum() + (truth > 0).sum()) > 0.8


def test_segment_a_dicom_series_in_its_own_geometry(data_root, tmp_path, cli):
    from hipposeg.data.readers import read_dicom_series

    folder = data_root / "dicom_hcrop" / "study2_hcrop"
    result = cli("segment", str(folder), "-o", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    seg = nib.load(tmp_path / "out" / "study2_hcrop_seg.nii.gz")
    image = read_dicom_series(folder)
    assert seg.shape == image.shape and np.allclose(seg.affine, image.affine, atol=1e-4)
    labels = np.asanyarray(seg.dataobj)
    assert 1500 < (labels > 0).sum() < 7000 and set(np.unique(labels)) == {0, 1, 2}


def test_lps_copy_gives_the_same_mask_as_ras(msd, tmp_path, segmenter):
    from hipposeg.data.readers import read_image

    src = msd / "imagesTr" / "hippocampus_004.nii.gz"
    ras = read_image(src)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = ras.shape[0] - 1, ras.shape[1] - 1
    lps_path = tmp_path / "lps.nii.gz"
    nib.save(nib.Nifti1Image(ras.array[::-1, ::-1].copy(), ras.affine @ flip), lps_path)
    lps = read_image(lps_path)
    assert lps.orientation == "LPS"
    a = segmenter.segment(ras).labels
    b = segmenter.segment(lps).labels[::-1, ::-1]  # back onto the RAS original's grid (same world positions)
    dice = 2 * ((a > 0) & (b > 0)).sum() / ((a > 0).sum() + (b > 0).sum())
    assert dice >= 0.99


def test_tta_changes_only_voxels_where_the_flipped_prediction_disagrees(msd, tmp_path, cli, segmenter):
    import torch

    from hipposeg.data.readers import read_image

    src = msd / "imagesTr" / "hippocampus_007.nii.gz"
    # TTA mirrors the 2.5D core's slices: checked on the default, the core alone (the ensemble adds the partner's map)
    plain = cli("segment", str(src), "-o", str(tmp_path / "plain"), "--quiet", "--no-qc")
    tta = cli("segment", str(src), "-o", str(tmp_path / "tta"), "--quiet", "--no-qc", "--tta")
    assert plain.returncode == 0 and tta.returncode == 0
    a = np.asanyarray(nib.load(tmp_path / "plain" / "hippocampus_007_seg.nii.gz").dataobj)
    b = np.asanyarray(nib.load(tmp_path / "tta" / "hippocampus_007_seg.nii.gz").dataobj)
    # the mirrored pass alone, as TTA computes it
    from monai.data import MetaTensor

    image = read_image(src)  # a RAS 1 mm crop: preprocessing keeps its grid, so voxels line up with the files
    tensor = MetaTensor(torch.as_tensor(image.array.astype(np.float32)), affine=torch.as_tensor(image.affine))
    data = segmenter.preprocessing({"image": tensor})
    assert tuple(data["image"].shape[1:]) == image.shape
    with torch.inference_mode():
        vol = data["image"].as_tensor()[0]
        core = segmenter.network  # the default's one network
        assert segmenter.partner_checkpoint is None
        mirrored = segmenter.inferer.slice_inferer._predict_volume(vol.flip(0), core)[0].flip(1)  # (mean, per axis)
        direct = segmenter.inferer.slice_inferer._predict_volume(vol, core)[0]
    agree = (mirrored.argmax(0) == direct.argmax(0)).numpy()
    # where plain and mirrored passes agree, TTA (their average) must agree too; the largest-component step
    # may only remove islands, which the tolerance of a few voxels covers
    assert ((a != b) & agree).sum() <= 5
    assert (a != b).any() <= (~agree).any()


def test_bad_inputs_fail_alone_with_one_line_each(msd, tmp_path, cli):
    good = msd / "imagesTr" / "hippocampus_001.nii.gz"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated.nii.gz").write_bytes(good.read_bytes()[:400])
    (bad / "notimage.nii.gz").write_text("hello")
    ref = nib.load(good)
    nib.save(nib.Nifti1Image(np.zeros((20, 20), np.float32), np.eye(4)), bad / "flat2d.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), bad / "four_d.nii.gz")
    nan = np.asanyarray(ref.dataobj).astype(np.float32)
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, ref.affine), bad / "nonfinite.nii.gz")
    nib.save(nib.Nifti1Image(np.full(ref.shape, 7, np.float32), ref.affine), bad / "constant.nii.gz")
    empty_dicom = tmp_path / "empty_dicom"
    empty_dicom.mkdir()
    (empty_dicom / "readme.txt").write_text("no dicom here")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("pre-existing")
    before = _snapshot(out)
    result = cli("segment", str(good), str(bad), str(tmp_path / "missing.nii.gz"), str(empty_dicom),
                 "-o", str(out), "--quiet", "--no-qc")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    names = ["truncated", "notimage", "flat2d", "four_d", "nonfinite", "constant", "missing.nii.gz", "empty_dicom"]
    assert len(errors) == len(names)
    for name in names:
        assert sum(name in line for line in errors) == 1, (name, errors)
    assert "segmented 1 case(s), 8 failed" in result.stdout
    assert (out / "hippocampus_001_seg.nii.gz").is_file()
    assert _snapshot(out)["keep.txt"] == before["keep.txt"]
    assert not [p for p in out.iterdir() if ".part" in p.name], "temporary files left behind"


def test_rerun_skips_finished_cases_and_overwrite_redoes_them(msd, tmp_path, cli):
    good = msd / "imagesTr" / "hippocampus_001.nii.gz"
    out = tmp_path / "out"
    assert cli("segment", str(good), "-o", str(out), "--quiet", "--no-qc").returncode == 0
    before = _snapshot(out)
    again = cli("segment", str(good), "-o", str(out), "--quiet", "--no-qc")
    assert again.returncode == 0 and "segmented 0 case(s)" in again.stdout and "1 already done" in again.stdout
    after = _snapshot(out)
    for name in ("hippocampus_001_seg.nii.gz", "hippocampus_001_seg.json", "hippocampus_001_volumes.json"):
        assert after[name] == before[name], name  # outputs untouched; only the derived tables are rewritten
    assert after["volumes.csv"][1] == before["volumes.csv"][1]
    forced = cli("segment", str(good), "-o", str(out), "--quiet", "--no-qc", "--overwrite")
    assert forced.returncode == 0 and "segmented 1 case(s)" in forced.stdout
    assert _snapshot(out)["hippocampus_001_seg.nii.gz"][0] != before["hippocampus_001_seg.nii.gz"][0]


def test_evaluate_pairs_cases_and_rejects_shape_mismatch(msd, tmp_path, cli):
    preds, gts = tmp_path / "pred", tmp_path / "gt"
    preds.mkdir()
    gts.mkdir()
    for case in ("hippocampus_001", "hippocampus_003"):
        label = msd / "labelsTr" / f"{case}.nii.gz"
        (gts / f"{case}.nii.gz").write_bytes(label.read_bytes())
        img = nib.load(label)
        data = np.asanyarray(img.dataobj).copy()
        data[data.shape[0] // 2:] = 0  # a known, imperfect prediction
        nib.save(nib.Nifti1Image(data, img.affine), preds / f"{case}_seg.nii.gz")
    result = cli("evaluate", str(preds), str(gts), "-o", str(tmp_path / "report.csv"))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    for row in rows:
        truth = np.asanyarray(nib.load(gts / f"{row['case']}.nii.gz").dataobj)
        pred = np.asanyarray(nib.load(preds / f"{row['case']}_seg.nii.gz").dataobj)
        expected = 2 * ((pred > 0) & (truth > 0)).sum() / ((pred > 0).sum() + (truth > 0).sum())
        assert float(row["dice_whole"]) == pytest.approx(expected, abs=1e-5)
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), preds / "hippocampus_003_seg.nii.gz")
    result = cli("evaluate", str(preds), str(gts), "-o", str(tmp_path / "report2.csv"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and "hippocampus_003_seg.nii.gz" in line[0] and "shape" in line[0]


def test_infer_reports_a_missing_input_in_one_line(tmp_path, cli):
    """(``infer`` writing masks is checked door by door in test_doors.py.)"""
    missing = cli("infer", str(tmp_path / "nope"), "-o", str(tmp_path / "out2"))
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 2 and len(lines) == 1, missing.stderr
    assert lines[0].startswith("error: ") and "nope" in lines[0] and not (tmp_path / "out2").exists()


def test_hires_model_is_chosen_by_name_and_fixes_the_hard_validation_case(msd, tmp_path, cli):
    """``--model hires`` runs the shipped 1.5x model (its scale read from the checkpoint), alone. On fold-0 case
    hippocampus_221, a low-contrast crop whose tail the 0.4.0 default missed (whole Dice 0.68), it reaches 0.80."""
    from hipposeg.bundle import shipped_model
    from hipposeg.model import architecture_overrides

    hires = shipped_model("hires")
    assert hires.is_file() and hires.stat().st_size < 30e6
    assert shipped_model("default") == MODEL and shipped_model("models/model.pt") is None
    assert architecture_overrides(hires)["input_scale"] == pytest.approx(1.5)
    case = msd / "imagesTr" / "hippocampus_221.nii.gz"
    result = cli("segment", str(case), "-o", str(tmp_path / "out"), "--model", "hires", "--no-qc", "--quiet")
    assert result.returncode == 0, result.stderr
    labels = np.asanyarray(nib.load(tmp_path / "out" / "hippocampus_221_seg.nii.gz").dataobj) > 0
    truth = np.asanyarray(nib.load(str(case).replace("imagesTr", "labelsTr")).dataobj) > 0
    assert 2 * (labels & truth).sum() / (labels.sum() + truth.sum()) > 0.77
    row = next(csv.DictReader(open(tmp_path / "out" / "volumes.csv")))
    assert row["model"] == str(hires.resolve())  # the table says which model made the mask


@pytest.mark.parametrize("command", ["segment", "infer"])
def test_an_unknown_model_name_is_one_line_naming_it(msd, tmp_path, cli, command):
    case = msd / "imagesTr" / "hippocampus_001.nii.gz"
    result = cli(command, str(case), "-o", str(tmp_path / "out"), "--model", "hi-res")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "hi-res" in line and "default, core, ensemble, hires" in line
    assert not (tmp_path / "out").exists()


def test_largest_component_rule_is_monai_with_26_connectivity():
    """One rule for crops and whole heads: all labels merged, 26-connectivity (a corner touch joins), pinned to
    scipy's labelling and to the bundle's ``KeepLargestConnectedComponentd``."""
    from scipy import ndimage

    from hipposeg.inference import LARGEST_COMPONENT_CONNECTIVITY, keep_largest_component

    labels = np.zeros((12, 12, 12), np.uint8)
    labels[1:4, 1:4, 1:3] = 1  # 18 voxels, anterior...
    labels[1:4, 1:4, 3:5] = 2  # ...and posterior touching it: one component of 36 voxels
    labels[4, 4, 5] = 1  # touches the block's (3, 3, 4) by a corner only: joins it under 26-connectivity
    labels[5, 5, 5] = 2  # touches (4, 4, 5) by an edge
    labels[9:12, 9:12, 9:12] = 1  # 27 voxels, a separate island, smaller than the 38 of the block
    kept = keep_largest_component(labels)
    assert kept.dtype == np.uint8 and kept[4, 4, 5] == 1 and kept[5, 5, 5] == 2 and not kept[9:, 9:, 9:].any()
    components, _ = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    np.testing.assert_array_equal(kept, np.where(components == sizes.argmax(), labels, 0))
    assert keep_largest_component(labels, connectivity=1)[4, 4, 5] == 0  # 6-connectivity would cut it off
    assert not keep_largest_component(np.zeros((4, 4, 4), np.uint8)).any()
    recipe = json.loads((BUNDLE / "configs" / "inference.json").read_text())["postprocessing"]["transforms"]
    step = next(t for t in recipe if t["_target_"] == "KeepLargestConnectedComponentd")
    assert step["connectivity"] == LARGEST_COMPONENT_CONNECTIVITY and step["independent"] is False
    # what is scored is what ships: evaluate.json (an overlay of inference.json) has no post-processing of its own
    assert not [key for key in json.loads((BUNDLE / "configs" / "evaluate.json").read_text()) if "postprocessing" in key]


def test_segmenter_runs_the_bundle_recipe_without_its_writer(segmenter):
    """``hipposeg segment`` post-processes with the transforms parsed from inference.json, not a copy of them."""
    from monai.transforms import AsDiscreted, CopyItemsd, Invertd, KeepLargestConnectedComponentd

    steps = segmenter.postprocessing.transforms
    assert [type(t) for t in steps] == [Invertd, CopyItemsd, AsDiscreted, KeepLargestConnectedComponentd]
    assert steps[0].transform is segmenter.preprocessing  # Invertd undoes exactly the preprocessing that ran


def test_confidence_is_computed_only_when_asked_for(msd, segmenter, monkeypatch):
    """``segment`` computes the confidence by default (``hipposeg segment`` writes its predicted_dice) and not with
    ``with_confidence=False``; ``predict_probabilities`` never does. Masks and probabilities are the same either way."""
    import hipposeg.confidence
    from hipposeg.data.readers import check_volume, read_image

    image = check_volume(read_image(msd / "imagesTr" / "hippocampus_001.nii.gz"))
    asked = segmenter.segment(image, return_probabilities=True)
    probabilities, confidence = segmenter.predict_with_confidence(image)
    assert 0.0 <= asked.confidence["predicted_dice"] <= 1.0 and confidence == asked.confidence

    def not_asked(*args, **kwargs):
        raise AssertionError("confidence computed without being asked for")

    monkeypatch.setattr(hipposeg.confidence, "confidence_features", not_asked)
    monkeypatch.setattr(segmenter.inferer, "parts", not_asked)
    plain = segmenter.segment(image, return_probabilities=True, with_confidence=False)
    assert plain.confidence is None
    np.testing.assert_array_equal(plain.labels, asked.labels)
    np.testing.assert_array_equal(plain.probabilities, asked.probabilities)
    np.testing.assert_array_equal(segmenter.predict_probabilities(image), probabilities)


def test_thick_slice_input_round_trips_exactly_through_preprocessing_and_invertd(segmenter):
    """A 2 mm-slice image, resampled to 1 mm by the bundle's preprocessing and carried back by its ``Invertd``,
    comes back unchanged (up to the z-score): the 1 mm grid keeps the thick slice centres, so the thick-slice loss
    of ``bench/thick_slices.py`` is the network's, not the geometry's (bench/README, "Why axis 2 ...")."""
    import torch
    from monai.data import MetaTensor

    rng = np.random.default_rng(0)
    for axis in range(3):
        array = rng.normal(100.0, 20.0, (20, 24, 18)).astype(np.float32)
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        affine[axis, axis] = 2.0
        affine[:3, 3] = (3.0, -7.0, 11.3)
        data = segmenter.preprocessing({"image": MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(affine))})
        assert data["image"].shape[1 + axis] == 2 * array.shape[axis] - 1  # slice centres and the midpoints
        x = data["image"]
        data["pred"] = MetaTensor(x.repeat(3, 1, 1, 1), meta=x.meta, applied_operations=x.applied_operations)
        back = np.asarray(segmenter.postprocessing.transforms[0](data)["pred"][0])
        assert back.shape == array.shape
        fit = np.polyfit(array.ravel(), back.ravel(), 1)  # the z-score is a linear map
        np.testing.assert_allclose(np.polyval(fit, array), back, atol=1e-4)


def test_segment_one_case_writes_the_row_file_last_and_cleans_up_a_failed_case(tmp_path, monkeypatch):
    from test_batch import ThresholdSegmenter, _volume

    from hipposeg.batch import CaseFiles
    from hipposeg.data.manifest import sha256_of
    from hipposeg.errors import InputError
    from hipposeg.segment import CaseInput, segment_one_case

    src = tmp_path / "case.nii.gz"
    _volume(src, 0)
    out = tmp_path / "out"
    out.mkdir()
    record = segment_one_case(CaseInput("case", src), ThresholdSegmenter(), out, mode="crop", qc_png=True)
    files = CaseFiles.of(out, "case")
    assert all(p.is_file() for p in files.outputs())
    assert max(p.stat().st_mtime_ns for p in files.outputs()[:-1]) <= files.row.stat().st_mtime_ns
    assert json.loads(files.row.read_text()) == json.loads(json.dumps(record))
    assert record["input_sha256"] == sha256_of(src)
    labels = np.asanyarray(nib.load(files.seg).dataobj)
    assert record["row"]["volume_anterior_mm3"] == (labels == 1).sum() == 4 * 12 * 6
    assert json.loads(files.labels.read_text()) == {"0": "background", "1": "anterior", "2": "posterior"}

    import hipposeg.qc_picture

    def broken_picture(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hipposeg.qc_picture, "save_qc_png", broken_picture)
    with pytest.raises(RuntimeError, match="disk full"):
        segment_one_case(CaseInput("case", src), ThresholdSegmenter(), out, mode="crop", qc_png=True)
    assert not files.seg.exists() and not files.labels.exists() and not files.row.exists()
    (tmp_path / "bad.nii.gz").write_text("not an image")
    with pytest.raises(InputError, match="bad.nii.gz"):
        segment_one_case(CaseInput("bad", tmp_path / "bad.nii.gz"), ThresholdSegmenter(), out, mode="crop")
    assert not list(out.glob("bad*"))


def test_the_default_is_the_core_and_the_partner_opt_in():
    """No --model: the 2.5D core alone (since 0.8.0; issue 27); --model core names the same; --model ensemble: the
    same core averaged with the shipped 3D partner (masks per name and door: test_doors.py)."""
    from hipposeg.bundle import resolve_model

    default, core, ensemble = (resolve_model(name)[1] for name in ("default", "core", "ensemble"))
    assert core == default and default["use_partner"] is False and ensemble["use_partner"] is True
    assert ensemble["ckpt_path"] == default["ckpt_path"] == str(MODEL.resolve())
    assert ensemble["partner_ckpt_path"].endswith("model_3d.pt")
