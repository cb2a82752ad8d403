"""The BIDS App end to end: a small BIDS dataset made of the whole-head test scans, participant and group levels,
a re-run, a scheduler shard, and torch's distributed engine with 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, run_cli


@pytest.fixture(scope="module")
def bids_dir(data_root, tmp_path_factory):
    """sub-01 (bert), sub-02 with two sessions (candi030, colin27), sub-03 with a broken T1w, a T2w that is not
    an input, and a derivatives folder that must never be read."""
    root = tmp_path_factory.mktemp("bids") / "ds"
    images = {"sub-01/anat/sub-01_T1w.nii.gz": "bert", "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz": "candi030",
              "sub-02/ses-2/anat/sub-02_ses-2_T1w.nii.gz": "colin27"}
    for rel, subject in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(data_root / "fullhead" / subject / "t1.nii.gz", root / rel)
    broken = root / "sub-03" / "anat" / "sub-03_T1w.nii.gz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x1f\x8b not really gzip")
    shutil.copy(data_root / "fullhead" / "bert" / "t1.nii.gz", root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    (root / "derivatives" / "other" / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    return root


def _bids(*args, timeout=900):
    return run_cli("-m", "hipposeg", "bids", *map(str, args), timeout=timeout)


@pytest.fixture(scope="module")
def participant_run(bids_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("deriv") / "hipposeg"
    proc = _bids(bids_dir, out, "participant", "--quiet")
    return out, proc


def test_participant_level_writes_bids_derivatives(participant_run, bids_dir):
    out, proc = participant_run
    assert proc.returncode == 2, proc.stderr  # the broken image
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sub-03_T1w.nii.gz" in errors[0], proc.stderr
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    generated = description["GeneratedBy"][0]
    assert generated["Name"] == "hipposeg" and generated["Models"][0]["file"].endswith(".pt")
    assert len(generated["Models"][0]["sha256"]) == 64
    lut = (out / "desc-hipposeg_dseg.tsv").read_text().splitlines()
    assert lut[0] == "index\tname\tabbreviation\tcolor" and len(lut) == 5
    for stem, anat in (("sub-01", "sub-01/anat"), ("sub-02_ses-1", "sub-02/ses-1/anat"),
                       ("sub-02_ses-2", "sub-02/ses-2/anat")):
        seg = out / anat / f"{stem}_space-T1w_desc-hipposeg_dseg.nii.gz"
        source = nib.load(str(bids_dir / anat / f"{stem}_T1w.nii.gz"))
        img = nib.load(str(seg))
        assert img.shape == source.shape and np.allclose(img.affine, source.affine, atol=1e-4)
        labels = np.asarray(img.dataobj)
        assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
        tsv = (out / anat / f"{stem}_desc-hipposeg_volumes.tsv").read_text().splitlines()
        header, row = tsv[0].split("\t"), tsv[1].split("\t")
        values = dict(zip(header, row))
        assert values["case"] == stem and float(values["etiv_mm3"]) > 5e5
        assert 0 < float(values["volume_left_etiv_fraction"]) < 0.01
        assert all(0 <= float(values[f"predicted_dice_{side}"]) <= 1 for side in ("left", "right"))  # issue 25
        assert (out / stem.split("_")[0] / "figures" / f"{stem}_desc-hipposeg_qc.png").is_file()
    assert not list(out.rglob("*T2w*")) and not (out / "sub-03" / "anat").exists()


def test_rerun_skips_done_images_and_group_level_collects_them(participant_run, bids_dir, cli):
    out, _ = participant_run
    seg = out / "sub-01" / "anat" / "sub-01_space-T1w_desc-hipposeg_dseg.nii.gz"
    before = seg.stat().st_mtime_ns
    again = cli("bids", bids_dir, out, "participant", "--participant-label", "01", "--quiet")
    assert again.returncode == 0, again.stderr
    assert "1 already done" in again.stdout and seg.stat().st_mtime_ns == before
    group = cli("bids", bids_dir, out, "group")
    assert group.returncode == 0, group.stderr
    lines = (out / "group_volumes.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines[1:]] == ["sub-01", "sub-02_ses-1", "sub-02_ses-2"]
    assert len(json.loads((out / "group_volumes.json").read_text())) == 3
    html = (out / "group_report.html").read_text()
    assert "sub-02_ses-2" in html and "hipposeg bids" in html and "http://" not in html and "https://" not in html


def test_save_uncertainty_writes_the_map_and_its_sidecar(bids_dir, tmp_path, cli):
    """``--save-uncertainty`` (issue 25): the map in the T1w's grid (entropy, bits) with a sidecar saying so; a plain
    re-run finds only the T1w image, already done; re-done without the option, no map or sidecar is left; asking
    for the map of a finished image says to pass --overwrite and writes nothing."""
    out = tmp_path / "deriv"
    anat = out / "sub-01" / "anat"
    seg, unc = (anat / f"sub-01_space-T1w_desc-hipposeg_{suffix}.nii.gz" for suffix in ("dseg", "uncertainty"))
    sidecar = anat / "sub-01_space-T1w_desc-hipposeg_uncertainty.json"
    args = (bids_dir, out, "participant", "--participant-label", "01", "--quiet")
    first = cli("bids", *args, "--save-uncertainty")
    assert first.returncode == 0, first.stderr
    source, img = nib.load(str(bids_dir / "sub-01" / "anat" / "sub-01_T1w.nii.gz")), nib.load(str(unc))
    assert img.shape == source.shape and np.allclose(img.affine, source.affine, atol=1e-4)
    values = np.asanyarray(img.dataobj)
    assert values.dtype == np.float32 and values.min() == 0 and 0 < values.max() <= np.log2(3) + 1e-4
    description = json.loads(sidecar.read_text())
    assert description["Units"] == "bit" and "entropy" in description["Description"]
    assert description["Range"] == [0.0, round(float(np.log2(3)), 4)]
    again = cli("bids", *args)
    assert again.returncode == 0 and "segmented 0 case(s), 0 failed, 0 skipped, 1 already done" in again.stdout
    assert unc.is_file()
    redo = cli("bids", *args, "--overwrite")
    assert redo.returncode == 0, redo.stderr
    assert seg.is_file() and not unc.exists() and not sidecar.exists()
    kept = cli("bids", *args, "--save-uncertainty")
    assert kept.returncode == 0 and "1 already done" in kept.stdout and not unc.exists()
    assert "pass --overwrite to write its uncertainty map" in kept.stderr


def test_missing_participant_and_bad_shard(bids_dir, tmp_path, cli):
    proc = cli("bids", bids_dir, tmp_path / "out", "participant", "--participant-label", "99")
    assert proc.returncode == 2 and "participant 99" in proc.stderr
    proc = cli("bids", bids_dir, tmp_path / "out", "participant", "--shard", "3/2")
    assert proc.returncode == 2 and "--shard" in proc.stderr
    proc = cli("bids", tmp_path, tmp_path / "out", "participant")
    assert proc.returncode == 2 and "dataset_description.json" in proc.stderr


def test_two_cpu_processes_share_the_images_with_torch_distributed(bids_dir, tmp_path):
    """torchrun, 2 processes, gloo: each rank segments one of the two selected images, rank 0 writes the group
    table with both."""
    out = tmp_path / "dist"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hipposeg",
           "bids", str(bids_dir), str(out), "participant", "--participant-label", "01", "02", "--session-label", "2",
           "--distributed", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[rank 0/2] segmented 1 case(s)" in proc.stdout and "[rank 1/2] segmented 1 case(s)" in proc.stdout
    rows = json.loads((out / "group_volumes.json").read_text())
    assert sorted(r["case"] for r in rows) == ["sub-01", "sub-02_ses-2"]
    assert (out / "group_report.html").is_file()
