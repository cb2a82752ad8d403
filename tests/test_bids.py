"""BIDS discovery and derivative naming (fast, no model); the end-to-end BIDS App run is in test_bids_app.py."""

import json

import pytest

from hipposeg.bids import (DSEG_LABELS, case_files, derivative_paths, dseg_tsv, find_t1w_images,
                           is_derivative_name, parse_entities, row_to_tsv)
from hipposeg.errors import InputError


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def bids(tmp_path):
    root = tmp_path / "ds"
    (root).mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    _touch(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    _touch(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")  # not a T1w
    _touch(root / "sub-02" / "ses-a" / "anat" / "sub-02_ses-a_acq-mprage_run-1_T1w.nii.gz")
    _touch(root / "sub-02" / "ses-b" / "anat" / "sub-02_ses-b_T1w.nii")
    _touch(root / "derivatives" / "hipposeg" / "sub-01" / "anat" / "sub-01_T1w.nii.gz")  # never an input
    return root


def test_finds_t1w_images_with_entities(bids):
    images, problems = find_t1w_images(bids)
    assert problems == []
    assert [i.stem for i in images] == ["sub-01", "sub-02_ses-a_acq-mprage_run-1", "sub-02_ses-b"]
    assert images[1].entities == {"sub": "02", "ses": "a", "acq": "mprage", "run": "1"}
    assert images[1].session == "a" and images[0].session is None


def test_participant_and_session_filters_and_missing_labels(bids):
    images, problems = find_t1w_images(bids, participant_labels=["sub-02", "03"], session_labels=["b"])
    assert [i.stem for i in images] == ["sub-02_ses-b"]
    assert len(problems) == 1 and "participant 03" in problems[0]


def test_not_a_bids_dataset(tmp_path):
    with pytest.raises(InputError, match="dataset_description.json"):
        find_t1w_images(tmp_path)
    with pytest.raises(InputError, match="no such BIDS folder"):
        find_t1w_images(tmp_path / "nope")


def test_derivative_names_follow_bids(bids, tmp_path):
    images, _ = find_t1w_images(bids)
    paths = derivative_paths(tmp_path / "out", images[1])
    assert paths["seg"].relative_to(tmp_path / "out").as_posix() == \
        "sub-02/ses-a/anat/sub-02_ses-a_acq-mprage_run-1_space-T1w_desc-hipposeg_dseg.nii.gz"
    assert paths["qc"].relative_to(tmp_path / "out").as_posix() == \
        "sub-02/figures/sub-02_ses-a_acq-mprage_run-1_desc-hipposeg_qc.png"
    assert all(is_derivative_name(p.name) for p in paths.values())
    assert not is_derivative_name("sub-01_T1w.nii.gz")
    assert parse_entities("sub-01_ses-x") == {"sub": "01", "ses": "x"}


def test_uncertainty_map_is_named_once_and_is_never_an_input(bids, tmp_path):
    """``--save-uncertainty``'s map and sidecar: named by ``derivative_paths``, handed to ``segment_one_case``
    through ``case_files``; an output for both doors, and no T1w input even inside the dataset's own folders."""
    from hipposeg.batch import CaseFiles
    from hipposeg.data.writers import is_output_name

    images, _ = find_t1w_images(bids)
    paths = derivative_paths(tmp_path / "out", images[0])
    assert paths["uncertainty"].name == "sub-01_space-T1w_desc-hipposeg_uncertainty.nii.gz"
    assert paths["uncertainty_json"].name == "sub-01_space-T1w_desc-hipposeg_uncertainty.json"
    files = case_files(tmp_path / "out", images[0])
    assert (files.uncertainty, files.uncertainty_json) == (paths["uncertainty"], paths["uncertainty_json"])
    assert is_derivative_name(files.uncertainty.name) and is_output_name(files.uncertainty)
    plain = CaseFiles.of(tmp_path, "case")  # hipposeg segment's layout: the map beside the mask, no sidecar
    assert plain.uncertainty == tmp_path / "case_uncertainty.nii.gz" and plain.uncertainty_json is None
    _touch(bids / "sub-01" / "anat" / files.uncertainty.name)
    assert [i.stem for i in find_t1w_images(bids)[0]] == [i.stem for i in images]


def test_dseg_tsv_and_row_tsv():
    lines = dseg_tsv().splitlines()
    assert lines[0] == "index\tname\tabbreviation\tcolor" and len(lines) == 1 + len(DSEG_LABELS)
    assert lines[1].split("\t")[:2] == ["1", "left_anterior"]
    text = row_to_tsv([{"case": "a", "v": 1.5, "flags": ["x", "y"]}, {"case": "b", "v": None, "extra": 2}])
    header, first, second = text.splitlines()
    assert header.split("\t") == ["case", "v", "flags", "extra"]
    assert first.split("\t") == ["a", "1.5", "x; y", "n/a"] and second.split("\t") == ["b", "n/a", "n/a", "2"]
