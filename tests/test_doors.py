"""Every door runs the same model for the same name and states where it came from.

The doors: ``hipposeg segment``, ``hipposeg infer`` (the bundle's inference workflow), ``python -m monai.bundle run``
with the documented overrides, and the bundle's ``evaluate.json`` (an overlay of ``inference.json``) against
``hipposeg evaluate`` of the masks inference writes. One crop in its own 1 mm grid and one in another grid
(reoriented, other voxel sizes) keep the geometry honest.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import BUNDLE, run_cli

CASES = ("hippocampus_003", "hippocampus_014")  # both in fold 0, held out from the shipped weights' training


def _odd_grid_copy(src, dst, *, stretch=(1.1, 0.9, 1.05)):
    """The volume reoriented (axes permuted and flipped, the anatomy where it was in the world, as
    ``nibabel.as_reoriented`` keeps it) and its voxels a little stretched: a case that is neither 1 mm nor RAS, so
    preprocessing resamples and ``Invertd`` has real work to undo."""
    img = nib.load(str(src))
    img = img.as_reoriented(np.array([[1, -1], [2, 1], [0, -1]]))  # axis 0 <- flipped axis 1, ...
    affine = img.affine.copy()
    affine[:3, :3] = affine[:3, :3] * np.asarray(stretch)[None, :]
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), affine), str(dst))


@pytest.fixture(scope="module")
def inputs(msd, tmp_path_factory):
    folder = tmp_path_factory.mktemp("doors_in")
    truth = tmp_path_factory.mktemp("doors_truth")
    (folder / f"{CASES[0]}.nii.gz").write_bytes((msd / "imagesTr" / f"{CASES[0]}.nii.gz").read_bytes())
    (truth / f"{CASES[0]}.nii.gz").write_bytes((msd / "labelsTr" / f"{CASES[0]}.nii.gz").read_bytes())
    _odd_grid_copy(msd / "imagesTr" / f"{CASES[1]}.nii.gz", folder / "odd_grid.nii.gz")
    _odd_grid_copy(msd / "labelsTr" / f"{CASES[1]}.nii.gz", truth / "odd_grid.nii.gz")
    return folder, truth


def _masks(folder) -> dict[str, np.ndarray]:
    return {p.name[:-len("_seg.nii.gz")]: np.asanyarray(nib.load(str(p)).dataobj)
            for p in sorted(folder.glob("*_seg.nii.gz"))}


@pytest.fixture(scope="module")
def door_masks(inputs, tmp_path_factory):
    """Masks of each model name through each door: segment and infer in-process, python -m monai.bundle run as a
    user types it (its command-line parsing is where a None override once vanished)."""
    from hipposeg.cli import main

    folder, _ = inputs
    out = tmp_path_factory.mktemp("doors_out")
    documented = {"ensemble": ["--use_partner", "True"], "default": []}  # bundles/hipposeg/docs/README.md
    masks = {}
    for name in ("ensemble", "default"):
        assert main(["segment", str(folder), "-o", str(out / f"segment_{name}"), "--model", name, "--no-qc",
                     "--quiet"]) == 0
        assert main(["infer", str(folder), "-o", str(out / f"infer_{name}"), "--model", name]) == 0
        result = run_cli("-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
                         "--dataset_dir", str(folder), "--output_dir", str(out / f"bundle_{name}"),
                         "--device", "$torch.device('cpu')", *documented[name], cwd=out)
        assert result.returncode == 0, result.stderr[-3000:]
        masks[name] = {door: _masks(out / f"{door}_{name}") for door in ("segment", "infer", "bundle")}
    return out, masks


@pytest.mark.parametrize("name", ["ensemble", "default"])
def test_every_door_writes_the_same_masks_for_a_model_name(door_masks, name):
    _, masks = door_masks
    by_door = masks[name]
    assert sorted(by_door["segment"]) == ["hippocampus_003", "odd_grid"]
    for door in ("infer", "bundle"):
        assert sorted(by_door[door]) == sorted(by_door["segment"]), door
        for case, mask in by_door["segment"].items():
            assert np.array_equal(by_door[door][case], mask), (name, door, case)


def test_ensemble_and_default_are_different_models(door_masks):
    """--model ensemble is not silently the default (through infer the core once was: 245-380 voxels differed from
    segment's core and none from the then default), and each row names the networks that made its mask."""
    from hipposeg.bundle import resolve_model

    out, masks = door_masks
    differing = 0
    for case in ("hippocampus_003", "odd_grid"):
        ensemble, default = masks["ensemble"]["segment"][case], masks["default"]["segment"][case]
        differing += int(np.sum(ensemble != default))
        ensemble, default = ensemble > 0, default > 0
        assert 2 * (ensemble & default).sum() / (ensemble.sum() + default.sum()) > 0.9, case
    assert differing > 50
    core_file = resolve_model("default")[1]["ckpt_path"]
    partner_file = resolve_model("ensemble")[1]["partner_ckpt_path"]
    for name, partner in (("default", None), ("ensemble", partner_file)):
        rows = json.loads((out / f"segment_{name}" / "volumes.json").read_text())
        assert {r["model"] for r in rows} == {str(Path(core_file).resolve())}
        assert {r.get("model_3d") for r in rows} == {str(Path(partner).resolve()) if partner else None}


def test_a_rerun_with_another_model_keeps_the_masks_and_names_both_models(door_masks, inputs, capsys):
    """Re-runs compare the whole model (core and partner): the ensemble's outputs folder re-run with the default is
    kept, and the message names what made the masks and what was asked for."""
    from hipposeg.cli import main

    out, masks = door_masks
    folder, _ = inputs
    before = _masks(out / "segment_ensemble")
    capsys.readouterr()
    assert main(["segment", str(folder), "-o", str(out / "segment_ensemble"), "--no-qc", "--quiet"]) == 0
    err = capsys.readouterr().err
    kept = [line for line in err.splitlines() if line.startswith("kept:")]
    assert len(kept) == 2 and all("model.pt alone" in line and "model_3d.pt" in line for line in kept), err
    after = _masks(out / "segment_ensemble")
    assert all(np.array_equal(before[c], after[c]) for c in before)


def test_evaluate_json_scores_what_inference_writes_in_the_input_grid(door_masks, inputs, tmp_path):
    """evaluate.json (overlay of inference.json: same network, inferer and Invertd post-processing) gives, per case,
    the metrics ``hipposeg evaluate`` computes from the masks inference.json wrote — also for the case in another
    grid, so the scoring happens in each input's own grid, not on the resampled 1 mm one."""
    from hipposeg.bundle import run_workflow
    from hipposeg.cli import main

    out, _ = door_masks
    folder, truth = inputs
    datalist = [{"image": str(folder / f"{c}.nii.gz"), "label": str(truth / f"{c}.nii.gz"), "case": c}
                for c in ("hippocampus_003", "odd_grid")]
    run_workflow(["inference.json", "evaluate.json"], overrides={
        "datalist": datalist, "output_dir": str(tmp_path / "eval"), "device": "$torch.device('cpu')"})
    bundle_rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "eval" / "metrics.csv"))}
    assert main(["evaluate", str(out / "bundle_default"), str(truth), "-o", str(tmp_path / "cli.csv")]) == 0
    cli_rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "cli.csv"))}
    assert sorted(bundle_rows) == sorted(cli_rows) == ["hippocampus_003", "odd_grid"]
    for case in cli_rows:
        for key in ("dice_whole", "dice_anterior", "dice_posterior", "hd95_whole_mm", "volume_pred_mm3"):
            assert float(bundle_rows[case][key]) == pytest.approx(float(cli_rows[case][key]), abs=1e-5), (case, key)
    assert float(cli_rows["odd_grid"]["dice_whole"]) > 0.85  # a real segmentation, scored in its own grid
    assert not list((tmp_path / "eval").glob("*_seg.nii.gz"))  # evaluation writes metrics, not masks


@pytest.mark.parametrize("config, workflow_type", [(["inference.json"], "infer"),
                                                     (["inference.json", "evaluate.json"], "infer")])
def test_bundle_workflows_have_every_property_monai_requires(config, workflow_type):
    from monai.bundle import create_workflow

    files = [str(BUNDLE / "configs" / name) for name in config]
    workflow = create_workflow(config_file=files if len(files) > 1 else files[0], workflow_type=workflow_type,
                               bundle_root=str(BUNDLE))
    assert not workflow.check_properties()


def test_hipposeg_evaluate_fold_runs_evaluate_json_with_the_model_named(tmp_path, capsys):
    """``hipposeg evaluate --fold N --model M``: the evaluate door takes the model as every door does; its rows are
    evaluate.json's (the same cases and Dice as the bundle run with resolve_model's overrides)."""
    from hipposeg.bundle import resolve_model, run_workflow
    from hipposeg.cli import main

    report = tmp_path / "core.csv"
    assert main(["evaluate", "--fold", "0", "--model", "core", "--max-cases", "2", "-o", str(report)]) == 0
    rows = list(csv.DictReader(open(report)))
    assert json.loads(report.with_suffix(".summary.json").read_text())["n_cases"] == len(rows) == 2
    _, overrides = resolve_model("core")
    run_workflow(["inference.json", "evaluate.json"], overrides={
        **overrides, "fold": 0, "max_cases": 2, "output_dir": str(tmp_path / "bundle")})
    bundle = list(csv.DictReader(open(tmp_path / "bundle" / "metrics.csv")))
    assert [(r["case"], r["dice_whole"]) for r in rows] == [(r["case"], r["dice_whole"]) for r in bundle]
    capsys.readouterr()
    assert main(["evaluate", "--fold", "0", "-o", str(report)]) == 2  # no overwrite without --overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), str(tmp_path), "--fold", "0"]) == 2
    assert "not both" in capsys.readouterr().err


def test_infer_save_uncertainty_writes_the_map(msd, tmp_path, cli):
    """``hipposeg infer --save-uncertainty``: the bundle door's map, as ``segment --save-uncertainty`` names it."""
    src = msd / "imagesTr" / "hippocampus_004.nii.gz"
    assert cli("infer", str(src), "-o", str(tmp_path / "plain")).returncode == 0
    assert not (tmp_path / "plain" / "hippocampus_004_uncertainty.nii.gz").exists()
    assert cli("infer", str(src), "-o", str(tmp_path / "map"), "--save-uncertainty").returncode == 0
    uncertainty = nib.load(str(tmp_path / "map" / "hippocampus_004_uncertainty.nii.gz"))
    assert uncertainty.shape == nib.load(str(src)).shape
