"""The Kaggle mrihs importer (hipposeg.data.mrihs) on a synthetic copy of the Kaggle layout."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from hipposeg.data.manifest import Manifest, sha256_of
from hipposeg.data.mrihs import import_mrihs
from hipposeg.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mrihs_fixture import make_mrihs_fixture, name5  # noqa: E402

LABELS = {"0": "background", "1": "left", "2": "right"}


def _read_jpeg(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def _labels_from_disk(root: Path, split_dir: str, subject: str, n_slices: int) -> np.ndarray:
    """The expected label volume, (cols, rows, slices), from the mask JPEGs on disk with plain PIL + numpy."""
    stem = name5(subject)
    planes = []
    for number in range(1, n_slices + 1):
        left = _read_jpeg(root / "label" / split_dir / subject / f"{stem}_L" / f"{stem}_L_{number:03d}.jpg") > 127
        right = _read_jpeg(root / "label" / split_dir / subject / f"{stem}_R" / f"{stem}_R_{number:03d}.jpg") > 127
        plane = np.zeros(left.shape, dtype=np.uint8)
        plane[right] = 2
        plane[left] = 1
        planes.append(plane.T)
    return np.stack(planes, axis=-1)


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    base = tmp_path_factory.mktemp("mrihs")
    info = make_mrihs_fixture(base / "kaggle")
    out = base / "out"
    report = import_mrihs(info["root"], out, progress=False)
    return info, out, report


def test_fixture_layout(imported):
    info, _, _ = imported
    root = info["root"]
    subject = "ADNI_007_S_4387_269929_ACPC"
    assert (root / "original/100" / subject / f"{subject}_001.jpg").is_file()
    mask_dir = root / "label/100label" / subject / "ADNI_007_S_4387_269929_L"
    assert (mask_dir / "ADNI_007_S_4387_269929_L_012.jpg").is_file()
    assert any(s.endswith("_tal_noscale") for s in info["test"])
    (broken,) = info["broken"]
    assert (root / "label/100label" / broken / f"{name5(broken)}_L").is_dir()
    assert not (root / "label/100label" / broken / f"{name5(broken)}_R").exists()
    with PILImage.open(root / "original/35" / info["rgb"][0] / f"{info['rgb'][0]}_001.jpg") as im:
        assert im.mode == "RGB" and im.size == (197, 233)  # PIL size is (width = columns, height = rows)
    # masks: left blob in the low columns, right blob in the high ones, on some slices only
    left, right = info["left"][subject], info["right"][subject]
    assert left.any() and right.any() and not left[0].any()
    assert np.nonzero(left)[2].max() < np.nonzero(right)[2].min()


def test_images_and_labels_round_trip(imported):
    info, out, report = imported
    assert sorted(report.imported) == sorted(info["good_train"] + info["test"])
    for subject in info["good_train"] + info["test"]:
        split = "Tr" if subject in info["train"] else "Ts"
        image_nii = _load(out / f"images{split}" / f"{subject}.nii.gz")
        label_nii = _load(out / f"labels{split}" / f"{subject}.nii.gz")
        image, label = np.asarray(image_nii.dataobj), np.asarray(label_nii.dataobj)
        assert image.shape == label.shape == info["volume_shape"] == (197, 233, 12)
        assert image.dtype == np.uint8 and label.dtype == np.uint8
        np.testing.assert_allclose(image_nii.affine, np.eye(4))
        assert nib.aff2axcodes(image_nii.affine) == ("R", "A", "S")
        np.testing.assert_allclose(label_nii.affine, image_nii.affine)

        source = info["images"][subject].transpose(2, 1, 0).astype(np.int16)  # (slice, row, col) -> (col, row, slice)
        diff = np.abs(image.astype(np.int16) - source)
        assert diff.mean() < 3 and diff.max() <= 10, (subject, diff.mean(), diff.max())
        # slice order: every imported slice matches its own source slice much better than its neighbours
        for k in range(1, image.shape[2]):
            assert np.abs(image[..., k].astype(np.int16) - source[..., k - 1]).mean() > 3 * diff[..., k].mean() + 1

        split_dir = "100label" if split == "Tr" else "35label"
        expected = _labels_from_disk(info["root"], split_dir, subject, 12)
        np.testing.assert_array_equal(label, expected)
        assert set(np.unique(label)) == {0, 1, 2}
        blob = np.zeros(label.shape, dtype=np.uint8)
        blob[info["right"][subject].transpose(2, 1, 0)] = 2
        blob[info["left"][subject].transpose(2, 1, 0)] = 1
        assert np.count_nonzero(label != blob) <= 0.02 * np.count_nonzero(blob)
        # left (label 1) lies in lower columns (i) than right (label 2)
        assert np.nonzero(label == 1)[0].max() < np.nonzero(label == 2)[0].min()
    assert report.overlaps == {}
    assert not any("orientation" in w for w in report.warnings)


def test_broken_subject_skipped(imported):
    info, out, report = imported
    (broken,) = info["broken"]
    reasons = dict(report.skipped)
    assert list(reasons) == [broken]
    assert "_R" in reasons[broken] and name5(broken) in reasons[broken]
    assert not list(out.rglob(f"{broken}*"))
    assert broken not in (out / "manifest.json").read_text()


def test_manifest_and_dataset_json(imported, tmp_path):
    info, out, _ = imported
    cases = json.loads((out / "manifest.json").read_text())["cases"]
    assert [c["id"] for c in cases] == info["good_train"] + info["test"]
    for case in cases:
        expected_keys = ["id", "split"] + (["fold"] if case["split"] == "train" else []) + [
            "image", "image_sha256", "label", "label_sha256"]
        assert list(case) == expected_keys
        assert case["split"] == ("train" if case["id"] in info["train"] else "test")
        folder = "Tr" if case["split"] == "train" else "Ts"
        assert case["image"] == f"images{folder}/{case['id']}.nii.gz"
        assert case["label"] == f"labels{folder}/{case['id']}.nii.gz"
        assert sha256_of(out / case["image"]) == case["image_sha256"]
        assert sha256_of(out / case["label"]) == case["label_sha256"]
        if case["split"] == "train":
            assert case["fold"] in range(5)

    spec = json.loads((out / "dataset.json").read_text())
    assert spec["labels"] == LABELS
    assert spec["numTraining"] == len(info["good_train"]) and spec["numTest"] == len(info["test"])
    assert [t["image"] for t in spec["training"]] == [f"./imagesTr/{s}.nii.gz" for s in info["good_train"]]
    assert [t["label"] for t in spec["test"]] == [f"./labelsTs/{s}.nii.gz" for s in info["test"]]
    assert "ADNI" in spec["licence"]

    # the project's manifest code reads the imported set
    manifest = Manifest(datasets={"mrihs": {"dir": out.name, "cases_file": "manifest.json", "labels": LABELS}})
    assert manifest.verify("mrihs", data_root=out.parent) == []
    every = manifest.datalist("mrihs", split="all", data_root=out.parent)
    assert sorted(d["case"] for d in every) == info["good_train"]
    test = manifest.datalist("mrihs", split="test", data_root=out.parent)
    assert [d["case"] for d in test] == info["test"] and all(Path(d["label"]).is_file() for d in test)


def test_second_run_leaves_files_alone(imported, tmp_path):
    info, _, _ = imported
    out = tmp_path / "out"
    shutil.copytree(imported[1], out)
    before = _snapshot(out)
    report = import_mrihs(info["root"], out, progress=False)
    assert report.imported == []
    reasons = dict(report.skipped)
    assert set(reasons) == set(info["train"] + info["test"])
    for subject in info["good_train"] + info["test"]:
        assert "exist" in reasons[subject] and "overwrite" in reasons[subject]
    assert report.listed == len(info["good_train"] + info["test"])
    assert _snapshot(out) == before

    again = import_mrihs(info["root"], out, overwrite=True, progress=False)
    assert sorted(again.imported) == sorted(info["good_train"] + info["test"])
    assert list(dict(again.skipped)) == list(info["broken"])
    cases = json.loads((out / "manifest.json").read_text())["cases"]
    assert all(sha256_of(out / c["image"]) == c["image_sha256"] for c in cases)


def test_later_run_adds_a_fixed_subject(tmp_path):
    info = make_mrihs_fixture(tmp_path / "kaggle", n_train=3, n_test=1, n_slices=6, rows=40, cols=32)
    late = info["good_train"][0]
    label_dir = info["root"] / "label/100label" / late
    label_dir.rename(tmp_path / "aside")
    out = tmp_path / "out"
    first = import_mrihs(info["root"], out, progress=False)
    assert "no label folder" in dict(first.skipped)[late]
    before = _snapshot(out)
    (tmp_path / "aside").rename(label_dir)

    second = import_mrihs(info["root"], out, progress=False)
    assert second.imported == [late]
    after = _snapshot(out)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {"dataset.json", "manifest.json", f"imagesTr/{late}.nii.gz", f"labelsTr/{late}.nii.gz"}
    ids = [c["id"] for c in json.loads((out / "manifest.json").read_text())["cases"]]
    assert ids == info["good_train"] + info["test"]


def test_source_problems_are_reported(tmp_path):
    info = make_mrihs_fixture(tmp_path / "kaggle", n_train=7, n_test=1, n_slices=8, rows=40, cols=32, seed=3)
    root = info["root"]
    good = info["good_train"]
    truncated, gap, short_mask, resized, no_labels, ok = good[:6]

    path = root / "original/100" / truncated / f"{truncated}_003.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (root / "original/100" / gap / f"{gap}_005.jpg").unlink()
    (root / "label/100label" / short_mask / f"{name5(short_mask)}_R" / f"{name5(short_mask)}_R_002.jpg").unlink()
    PILImage.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(
        root / "label/100label" / resized / f"{name5(resized)}_L" / f"{name5(resized)}_L_004.jpg")
    shutil.rmtree(root / "label/100label" / no_labels)
    (root / "original/100/README.txt").write_text("not a subject")
    (root / "original/100" / ok / ".DS_Store").write_bytes(b"\0")

    out = tmp_path / "out"
    report = import_mrihs(root, out, progress=False)
    reasons = dict(report.skipped)
    assert sorted(report.imported) == sorted([ok] + info["test"])
    assert set(reasons) == {truncated, gap, short_mask, resized, no_labels, *info["broken"]}
    assert "cannot read" in reasons[truncated] and f"{truncated}_003.jpg" in reasons[truncated]
    assert "not contiguous" in reasons[gap] and "005" in reasons[gap]
    assert "unequal" in reasons[short_mask] and "002" in reasons[short_mask]
    assert "inconsistent slice sizes" in reasons[resized]
    assert "no label folder" in reasons[no_labels]
    for subject in reasons:
        assert not list(out.rglob(f"{subject}*")), subject
    ids = [c["id"] for c in json.loads((out / "manifest.json").read_text())["cases"]]
    assert ids == [ok] + info["test"]


def test_overlap_left_wins_and_is_counted(tmp_path):
    info = make_mrihs_fixture(tmp_path / "kaggle", n_train=1, n_test=0, n_slices=6, rows=40, cols=32,
                              missing_right=False)
    (subject,) = info["train"]
    stem = name5(subject)
    mask_dir = info["root"] / "label/100label" / subject
    k = int(np.nonzero(info["left"][subject].any(axis=(1, 2)))[0][0])  # first slice with a left blob
    number = k + 1
    both = (info["left"][subject][k] | info["right"][subject][k]).astype(np.uint8) * 255
    PILImage.fromarray(both).save(mask_dir / f"{stem}_R" / f"{stem}_R_{number:03d}.jpg", quality=95)
    left_jpeg = _read_jpeg(mask_dir / f"{stem}_L" / f"{stem}_L_{number:03d}.jpg") > 127
    right_jpeg = _read_jpeg(mask_dir / f"{stem}_R" / f"{stem}_R_{number:03d}.jpg") > 127
    overlap = left_jpeg & right_jpeg
    assert overlap.sum() > 0

    report = import_mrihs(info["root"], tmp_path / "out", progress=False)
    assert report.imported == [subject]
    assert report.overlaps == {subject: int(overlap.sum())}
    label = np.asarray(_load(tmp_path / "out/labelsTr" / f"{subject}.nii.gz").dataobj)
    assert np.all(label[..., k].T[overlap] == 1)
    np.testing.assert_array_equal(label, _labels_from_disk(info["root"], "100label", subject, 6))


def test_swapped_sides_give_a_warning(tmp_path):
    info = make_mrihs_fixture(tmp_path / "kaggle", n_train=1, n_test=0, n_slices=6, rows=40, cols=32,
                              missing_right=False)
    (subject,) = info["train"]
    stem = name5(subject)
    folder = info["root"] / "label/100label" / subject
    for a, b in (("L", "X"), ("R", "L"), ("X", "R")):
        (folder / f"{stem}_{a}").rename(folder / f"{stem}_{b}")
        for path in (folder / f"{stem}_{b}").iterdir():
            path.rename(path.with_name(path.name.replace(f"{stem}_{a}_", f"{stem}_{b}_")))
    report = import_mrihs(info["root"], tmp_path / "out", progress=False)
    assert report.imported == [subject]
    assert any(subject in w and "orientation" in w for w in report.warnings)


def test_spacing_goes_into_the_affine(tmp_path):
    info = make_mrihs_fixture(tmp_path / "kaggle", n_train=1, n_test=0, n_slices=4, rows=24, cols=16,
                              missing_right=False)
    import_mrihs(info["root"], tmp_path / "out", spacing=(0.9, 1.1, 1.5), progress=False)
    nii = _load(tmp_path / "out/imagesTr" / f"{info['train'][0]}.nii.gz")
    np.testing.assert_allclose(nii.affine, np.diag([0.9, 1.1, 1.5, 1.0]), atol=1e-6)
    assert nii.shape == (16, 24, 4)
    with pytest.raises(InputError):
        import_mrihs(info["root"], tmp_path / "out2", spacing=(1.0, 0.0, 1.0), progress=False)


def test_missing_root_or_original_is_an_input_error(tmp_path):
    with pytest.raises(InputError) as err:
        import_mrihs(tmp_path / "nowhere", tmp_path / "out", progress=False)
    assert str(tmp_path / "nowhere") in str(err.value)
    (tmp_path / "kaggle/label").mkdir(parents=True)
    with pytest.raises(InputError) as err:
        import_mrihs(tmp_path / "kaggle", tmp_path / "out", progress=False)
    assert str(tmp_path / "kaggle" / "original") in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_import_mrihs(tmp_path, cli):
    info = make_mrihs_fixture(tmp_path / "kaggle", n_train=3, n_test=1, n_slices=6, rows=40, cols=32)
    out = tmp_path / "out"
    done = cli("import-mrihs", info["root"], "-o", out, "--spacing", "1", "1", "1.5")
    assert done.returncode == 0, done.stderr
    (broken,) = info["broken"]
    assert broken in done.stderr
    cases = json.loads((out / "manifest.json").read_text())["cases"]
    assert [c["id"] for c in cases] == info["good_train"] + info["test"]
    nii = _load(out / cases[0]["image"])
    np.testing.assert_allclose(nii.affine, np.diag([1.0, 1.0, 1.5, 1.0]), atol=1e-6)

    missing = tmp_path / "no_such_root"
    done = cli("import-mrihs", missing, "-o", tmp_path / "out2")
    assert done.returncode == 2
    assert str(missing) in done.stderr
    assert not (tmp_path / "out2").exists()
