"""The output folder as the state of a batch: re-runs, killed runs, concurrent runs, output names, bad folders.

The first tests run :func:`hipposeg.segment.segment_inputs` in-process with a threshold "model" on synthetic
volumes (fast); the last ones run ``python -m hipposeg.cli segment`` on Task04 crops, as a user does.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO

CROPS = ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_007", "hippocampus_008")


class ThresholdSegmenter:
    """Stands in for the network: label 1 where the image is above 0.5, label 2 above 1.5."""

    label_names = {0: "background", 1: "anterior", 2: "posterior"}
    checkpoint = None

    def segment(self, image, return_probabilities=False):
        a = np.asarray(image.array)
        labels = (a > 0.5).astype(np.uint8) + (a > 1.5).astype(np.uint8)
        probabilities = np.moveaxis(np.eye(3, dtype=np.float32)[labels], -1, 0) if return_probabilities else None
        return SimpleNamespace(labels=labels, probabilities=probabilities)


def _volume(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.05, (24, 24, 24)).astype(np.float32)
    a[6:16, 6:18, 8:14] += 1.0
    a[6:12, 6:18, 8:14] += 1.0
    nib.save(nib.Nifti1Image(a, np.eye(4)), path)


def _segment(inputs, out, **kw):
    from hipposeg.segment import segment_inputs

    lines = []
    run = segment_inputs([str(p) for p in inputs], out, ThresholdSegmenter(), mode="crop", qc_png=False,
                         progress=False, log=lines.append, **kw)
    return run, lines


def _table_cases(out):
    rows = list(csv.DictReader(open(out / "volumes.csv")))
    assert [r["case"] for r in rows] == [r["case"] for r in json.loads((out / "volumes.json").read_text())]
    return sorted(r["case"] for r in rows)


def _masks(out):
    return sorted(p.name[: -len("_seg.nii.gz")] for p in out.glob("*_seg.nii.gz"))


def _row_files(out):
    return sorted(p.name[: -len("_volumes.json")] for p in out.glob("*_volumes.json"))


@pytest.fixture
def synthetic(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(("a", "b", "c")):
        _volume(folder / f"{name}.nii.gz", i)
    return folder


def test_rerun_redoes_only_changed_and_half_written_cases(synthetic, tmp_path):
    out = tmp_path / "out"
    run, _ = _segment([synthetic], out)
    assert run.done == ["a", "b", "c"] and _table_cases(out) == _masks(out) == _row_files(out) == ["a", "b", "c"]
    record = json.loads((out / "a_volumes.json").read_text())
    from hipposeg.data.manifest import sha256_of

    assert record["input"] == str(synthetic / "a.nii.gz") and record["input_sha256"] == sha256_of(synthetic / "a.nii.gz")
    _volume(synthetic / "a.nii.gz", 99)  # new content under the same name
    (out / "b_volumes.json").unlink()  # as if a run had been killed after writing b's mask
    run, lines = _segment([synthetic], out)
    assert sorted(run.done) == ["a", "b"] and run.already_done == ["c"]
    assert any(l.startswith("redo: a:") and "changed" in l for l in lines), lines
    assert any(l.startswith("redo: b:") and "unfinished" in l for l in lines), lines
    assert json.loads((out / "a_volumes.json").read_text())["input_sha256"] == sha256_of(synthetic / "a.nii.gz")
    run, lines = _segment([synthetic / "a.nii.gz"], out, overwrite=True)
    assert run.done == ["a"] and not lines
    assert _table_cases(out) == _masks(out) == ["a", "b", "c"]  # the table covers the folder, not just this run


def test_a_mask_without_its_row_file_is_not_in_the_table(synthetic, tmp_path):
    out = tmp_path / "out"
    _segment([synthetic], out)
    (out / "c_seg.nii.gz").unlink()
    from hipposeg.batch import rebuild_volume_tables

    rebuild_volume_tables(out)
    assert _table_cases(out) == _masks(out) == ["a", "b"]


def test_a_live_lock_skips_the_case_and_a_dead_one_is_taken_over(synthetic, tmp_path):
    from hipposeg.batch import FileLock

    out = tmp_path / "out"
    out.mkdir()
    (out / "b.lock").write_text("pid 999999999 on a-machine-that-died\n")  # left by a killed run: no flock held
    with FileLock(out / "a.lock"):  # another live run is segmenting a
        run, lines = _segment([synthetic], out)
        assert run.done == ["b", "c"] and len(run.skipped) == 1
        assert lines == [f"skipped: a: being segmented by another run (pid {os.getpid()} on {os.uname().nodename})"]
        assert (out / "a.lock").exists() and not (out / "b.lock").exists()
    run, _ = _segment([synthetic], out)
    assert run.done == ["a"] and _table_cases(out) == ["a", "b", "c"]
    assert not list(out.glob("*.lock"))


def test_files_named_like_outputs_are_never_inputs(synthetic, tmp_path):
    run, _ = _segment([synthetic], synthetic)  # -o the input folder
    assert run.done == ["a", "b", "c"]
    run, lines = _segment([synthetic], synthetic, overwrite=True)
    assert run.done == ["a", "b", "c"] and not run.failed, lines
    assert not list(synthetic.glob("*_seg_seg*"))
    run, lines = _segment([synthetic / "a_seg.nii.gz"], tmp_path / "o2")
    assert run.failed == [f"{synthetic / 'a_seg.nii.gz'}: named like a hipposeg output (*_seg.nii.gz, "
                          "*_prob.nii.gz), not segmented"]
    from hipposeg.inference import list_volumes

    assert [d["image"] for d in list_volumes(str(synthetic))] == [str(synthetic / f"{n}.nii.gz") for n in "abc"]


@pytest.mark.parametrize("where", ["file", "below-a-file"])
def test_an_unusable_output_folder_is_one_error_before_any_work(synthetic, tmp_path, where):
    from hipposeg.errors import OutputFolderError

    blocker = tmp_path / "taken"
    blocker.write_text("a file in the way")
    out = blocker if where == "file" else blocker / "sub"
    with pytest.raises(OutputFolderError, match=str(out)):
        _segment([synthetic], out)
    assert blocker.read_text() == "a file in the way"


# ----------------------------------------------------------------------------------- as a user meets it


def _copy_crops(msd, folder, names=CROPS):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}.nii.gz").write_bytes((msd / "imagesTr" / f"{name}.nii.gz").read_bytes())


def _popen(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "hipposeg.cli", "segment", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_consistent(out, cases):
    assert _table_cases(out) == _masks(out) == _row_files(out) == sorted(cases)
    for row in csv.DictReader(open(out / "volumes.csv")):  # each row describes the mask beside it
        labels = np.asanyarray(nib.load(out / f"{row['case']}_seg.nii.gz").dataobj)
        assert float(row["volume_total_mm3"]) == pytest.approx(float((labels > 0).sum()))
    assert not list(out.glob("*.lock")) and not [p for p in out.iterdir() if ".part" in p.name]


def test_a_killed_batch_resumes_where_it_stopped(msd, tmp_path, cli):
    _copy_crops(msd, tmp_path / "in")
    out = tmp_path / "out"
    proc = _popen(tmp_path / "in", "-o", out, "--quiet", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not list(out.glob("*_volumes.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    finished = _row_files(out)
    assert 1 <= len(finished) < len(CROPS), "the run was not killed part-way"
    assert not (out / "volumes.csv").exists()
    result = cli("segment", str(tmp_path / "in"), "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"segmented {len(CROPS) - len(finished)} case(s)" in result.stdout
    assert f"{len(finished)} already done" in result.stdout
    _assert_consistent(out, CROPS)
    assert all((out / f"{c}_qc.png").is_file() for c in CROPS)


def test_two_runs_into_one_folder_share_the_work(msd, tmp_path):
    _copy_crops(msd, tmp_path / "in", CROPS[:4])
    out = tmp_path / "out"
    procs = [_popen(tmp_path / "in", "-o", out, "--quiet", "--no-qc", cwd=tmp_path) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    done = [int(r[0].split("segmented ")[1].split(" case")[0]) for r in results]
    assert sum(done) == 4, [r[0] for r in results]  # each case segmented by exactly one of the two runs
    _assert_consistent(out, CROPS[:4])


def test_an_extended_run_into_the_input_folder_keeps_earlier_rows(msd, tmp_path, cli):
    folder = tmp_path / "data"
    _copy_crops(msd, folder, CROPS[:2])
    first = cli("segment", str(folder), "-o", str(folder), "--quiet", "--no-qc")
    assert first.returncode == 0 and "segmented 2 case(s)" in first.stdout, first.stderr
    _copy_crops(msd, folder, CROPS[2:3])
    second = cli("segment", str(folder), "-o", str(folder), "--quiet", "--no-qc")
    assert second.returncode == 0 and "segmented 1 case(s)" in second.stdout and "2 already done" in second.stdout
    _assert_consistent(folder, CROPS[:3])
    third = cli("segment", str(folder), "-o", str(folder), "--quiet", "--no-qc", "--overwrite")
    assert third.returncode == 0 and "segmented 3 case(s), 0 failed" in third.stdout, third.stderr
    assert not list(folder.glob("*_seg_seg*"))
    _assert_consistent(folder, CROPS[:3])


def test_an_unwritable_output_folder_is_one_line(msd, tmp_path, cli):
    _copy_crops(msd, tmp_path / "in", CROPS[:3])
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    result = cli("segment", str(tmp_path / "in"), "-o", str(blocker), "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(blocker) in lines[0] and "output folder" in lines[0], lines
