import json
import shutil

import pytest

from hipposeg.data.manifest import assign_folds, data_root_candidates, load_manifest, resolve_data_root, sha256_of
from hipposeg.errors import DataNotFoundError, InputError


def test_manifest_lists_every_msd_file_with_checksums(manifest, msd):
    cases = manifest.cases("msd_hippocampus")
    train = [c for c in cases if c["split"] == "train"]
    assert len(train) == 208 and len([c for c in cases if c["split"] == "test"]) == 1
    on_disk = sorted(p.name for p in (msd / "imagesTr").glob("*.nii.gz"))
    assert sorted(c["image"].split("/")[-1] for c in train) == on_disk
    assert sha256_of(msd / train[0]["label"]) == train[0]["label_sha256"]
    entry = manifest.entry("msd_hippocampus")
    assert entry["licence"] == "CC-BY-SA 4.0" and entry["labels"] == {"0": "background", "1": "anterior", "2": "posterior"}
    assert entry["archive_url"].startswith("https://")


def test_folds_are_fixed_seeded_and_balanced(manifest):
    cases = [c for c in manifest.cases("msd_hippocampus") if c["split"] == "train"]
    folds = {c["id"]: c["fold"] for c in cases}
    entry = manifest.entry("msd_hippocampus")
    assert folds == assign_folds(list(folds), entry["n_folds"], entry["fold_seed"])
    sizes = sorted(list(folds.values()).count(f) for f in range(5))
    assert sizes == [41, 41, 42, 42, 42]
    val = manifest.datalist("msd_hippocampus", "val", 0)
    train = manifest.datalist("msd_hippocampus", "train", 0)
    assert len(val) + len(train) == 208 and not {v["case"] for v in val} & {t["case"] for t in train}
    assert len(manifest.datalist("msd_hippocampus", "train", None)) == 208
    # the learning curve's smaller training set: fold 1 left out too, fold 0 still the validation fold
    fold1 = {v["case"] for v in manifest.datalist("msd_hippocampus", "val", 1)}
    smaller = manifest.datalist("msd_hippocampus", "train", 0, exclude_folds=[1])
    assert {t["case"] for t in smaller} == {t["case"] for t in train} - fold1 and len(smaller) == 166 - len(fold1)
    assert manifest.datalist("msd_hippocampus", "val", 0, exclude_folds=[1]) == val


def test_unknown_split_is_refused_not_read_as_train(manifest):
    # "validation" once fell through to the training cases: an evaluation on training data, silently
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        manifest.datalist("msd_hippocampus", "validation", 0)
    assert len(manifest.datalist("msd_hippocampus", "val", 0)) == 42
    assert manifest.datalist("msd_hippocampus", "val", None) == []  # train on all: no validation cases


def test_data_root_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HIPPOSEG_DATA", str(tmp_path / "env"))
    assert data_root_candidates(tmp_path / "flag")[0][1] == tmp_path / "flag"
    assert data_root_candidates()[0][1] == tmp_path / "env"
    monkeypatch.delenv("HIPPOSEG_DATA")
    names = [how for how, _ in data_root_candidates()]
    assert names == ["beside the repository", "user cache"]


def test_missing_dataset_says_where_it_looked(tmp_path, cli):
    with pytest.raises(DataNotFoundError) as err:
        load_manifest().dataset_dir("msd_hippocampus", tmp_path)
    assert str(tmp_path) in str(err.value) and "Download" in str(err.value)
    result = cli("data", "verify", "--dataset", "msd_hippocampus", "--data-root", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "looked in" in result.stderr


def test_data_verify_passes_then_fails_on_one_changed_byte(data_root, tmp_path, cli):
    result = cli("data", "verify", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "msd_hippocampus: 418/418 files OK" in result.stdout
    # a copy of the dataset with one byte of one file changed
    copy_root = tmp_path / "root"
    shutil.copytree(data_root / "msd_hippocampus", copy_root / "msd_hippocampus")
    victim = copy_root / "msd_hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
    blob = bytearray(victim.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    victim.write_bytes(bytes(blob))
    result = cli("data", "verify", "--dataset", "msd_hippocampus", "--data-root", str(copy_root), "--quiet")
    assert result.returncode == 1
    bad = [line for line in result.stdout.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1 and str(victim) in bad[0] and "sha256" in bad[0]
    victim.unlink()
    result = cli("data", "verify", "--dataset", "msd_hippocampus", "--data-root", str(copy_root), "--quiet")
    assert result.returncode == 1 and "missing" in result.stdout


def test_manifest_json_is_valid_and_relative():
    raw = json.loads(load_manifest().path.read_text())
    for name, entry in raw["datasets"].items():
        assert {"dir", "source", "licence", "how_to_get", "labels" if name != "dicom_hcrop" else "dir"} <= set(entry)
        for case in entry.get("cases", []):
            assert not case["image"].startswith("/")


def test_resolve_data_root_prefers_existing(tmp_path, monkeypatch):
    monkeypatch.setenv("HIPPOSEG_DATA", str(tmp_path))
    assert resolve_data_root() == tmp_path


def test_an_msd_folder_the_manifest_does_not_list_brings_its_own_seeded_folds(manifest, msd, tmp_path):
    ids = [f"other_{i:03d}" for i in range(12)]
    description = {"training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
                   "test": ["./imagesTs/other_900.nii.gz"]}
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    entry = manifest.entry("msd_hippocampus")
    folds = assign_folds(ids, entry["n_folds"], entry["fold_seed"])
    val = manifest.datalist("msd_hippocampus", "val", 1, dataset_dir=tmp_path)
    train = manifest.datalist("msd_hippocampus", "train", 1, dataset_dir=tmp_path)
    assert [v["case"] for v in val] == [c for c in ids if folds[c] == 1] and len(val) + len(train) == 12
    assert train[0]["label"] == str(tmp_path / "labelsTr" / f"{train[0]['case']}.nii.gz")
    assert [t["case"] for t in manifest.datalist("msd_hippocampus", "test", 0, dataset_dir=tmp_path)] == ["other_900"]
    # the Task04 folder (its dataset.json lists only known cases) keeps the manifest's folds
    known = manifest.datalist("msd_hippocampus", "val", 0)
    assert manifest.datalist("msd_hippocampus", "val", 0, dataset_dir=msd) == known
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="dataset.json"):
        manifest.datalist("msd_hippocampus", "val", 0, dataset_dir=tmp_path)


def test_manifest_builder_reads_dataset_json_through_the_one_reader(manifest, msd, tmp_path):
    """The builder's MSD cases are those of :func:`msd_folder_cases` (the reader training uses for a folder the
    manifest does not list) with checksums: on Task04 exactly the shipped manifest's, and one case-id rule
    (``./`` paths, ``.nii.gz`` and other suffixes) for both."""
    from hipposeg.data.manifest import msd_folder_cases
    from hipposeg.data.manifest_builder import msd_cases

    entry = manifest.entry("msd_hippocampus")
    assert msd_cases(msd, entry["n_folds"], entry["fold_seed"]) == manifest.cases("msd_hippocampus")
    folder = tmp_path / "task"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for name in ("b.nii.gz", "a.nii"):
        (folder / "imagesTr" / name).write_bytes(name.encode())
        (folder / "labelsTr" / name).write_bytes(b"label " + name.encode())
    (folder / "dataset.json").write_text(json.dumps({"training": [
        {"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in ("b.nii.gz", "a.nii")], "test": []}))
    built = msd_cases(folder, 5, 0)
    read = {c["id"]: c for c in msd_folder_cases(folder, n_folds=5, seed=0)}
    assert [c["id"] for c in built] == ["a", "b"]
    for case in built:
        assert {k: case[k] for k in ("id", "split", "fold", "image", "label")} == read[case["id"]]
        assert case["image_sha256"] == sha256_of(folder / case["image"]) and case["image"].startswith("imagesTr/")
    with pytest.raises(DataNotFoundError):
        msd_cases(tmp_path, 5, 0)


def test_sha256_of_a_file_and_of_a_folder(tmp_path):
    """One sha256: a file's bytes; a folder (a DICOM series) its files' relative names and bytes, sorted."""
    import hashlib

    folder = tmp_path / "series"
    (folder / "sub").mkdir(parents=True)
    (folder / "1.dcm").write_bytes(b"one")
    (folder / "sub" / "2.dcm").write_bytes(b"two")
    assert sha256_of(folder / "1.dcm") == hashlib.sha256(b"one").hexdigest()
    expected = hashlib.sha256(b"1.dcm\0one" + b"sub/2.dcm\0two").hexdigest()
    assert sha256_of(folder) == expected
    (folder / "sub" / "2.dcm").rename(folder / "sub" / "3.dcm")  # same bytes, another name: another digest
    assert sha256_of(folder) != expected
