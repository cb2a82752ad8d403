"""The bundle, run the way a user runs it: the shared training and the two-process training as ``python -m
monai.bundle ...`` in a subprocess, from another folder; the other workflows through
:func:`hipposeg.bundle.run_workflow` (MONAI's ``monai.bundle.run``, what that command calls) in this process."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import BUNDLE, run_cli
from hipposeg.bundle import run_workflow

CONFIGS = BUNDLE / "configs"
SMALL = ["--max_cases", "4", "--num_threads", "2"]


def bundle(*args, cwd, **kw):
    return run_cli("-m", "monai.bundle", *args, cwd=cwd, **kw)


def configs(*names):
    return "[" + ",".join(f"'{CONFIGS / n}'" for n in names) + "]"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The one training the bundle tests share: ``train.json`` on 4 training cases, validated on 4 fold-0 cases, for
    2 epochs, run as a user runs it and interrupted on the way: its time limit stops the first run after epoch 1,
    and a second run resumes from that run's checkpoint for epoch 2."""
    out = tmp_path_factory.mktemp("train")
    common = ["--config_file", str(CONFIGS / "train.json"), "--epochs", "2", *SMALL,
              "--output_dir", str(out / "runs"), "--ckpt_dir", str(out / "models")]
    first = bundle("run", *common, "--max_minutes", "0.0001", cwd=out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    first_epochs = json.loads((out / "runs" / "history.json").read_text())["epochs"]
    second = bundle("run", *common, "--resume_from", str(out / "runs" / "checkpoint_final.pt"), cwd=out)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return SimpleNamespace(dir=out, first_epochs=first_epochs, log=first.stdout + first.stderr + second.stdout +
                           second.stderr)


def test_training_stops_at_its_time_limit_resumes_and_logs_validation(trained):
    """Epoch 1 in the first run (stopped by --max_minutes), epoch 2 in the resumed one, validated after each; the
    history records the evaluator's own metric of each epoch (what its StatsHandler logged)."""
    assert [e["epoch"] for e in trained.first_epochs] == [1]
    history = json.loads((trained.dir / "runs" / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2]
    assert history[1]["elapsed_s"] >= history[0]["elapsed_s"] > 0  # the clock continues across the resume
    assert all(np.isfinite(e["loss"]) for e in history)
    logged = {int(m.group(1)): float(m.group(2))
              for m in re.finditer(r"Epoch\[(\d+)\] Metrics -- .*?val_whole_dice: ([0-9.]+)", trained.log)}
    assert sorted(logged) == [1, 2], trained.log[-3000:]
    for e in history:
        assert e["val_whole_dice"] == pytest.approx(logged[e["epoch"]], abs=1e-4)
    assert list((trained.dir / "runs").glob("events.out.tfevents*")), "no TensorBoard log"
    state = torch.load(trained.dir / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("encoder.") for k in state)


def test_training_on_every_case_skips_validation_and_saves_the_final_epoch(tmp_path, cli):
    """``hipposeg train --fold -1`` (the bundle's ``fold: null``): no validation fold, so no validation runs and
    model.pt is the last epoch's network, the weights in checkpoint_final.pt, written when training completes.
    Without --output-dir everything goes to ./runs of the working directory, not into the installed bundle."""
    result = cli("train", "--fold", "-1", "--epochs", "1", "--set", "max_cases=2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    history = json.loads((tmp_path / "runs" / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1]
    assert not any(key.startswith("val") for e in history for key in e), history
    final = torch.load(tmp_path / "runs" / "checkpoint_final.pt", map_location="cpu", weights_only=True)["network"]
    model = torch.load(tmp_path / "runs" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert model.keys() == final.keys()
    assert all(torch.equal(model[k], final[k]) for k in final)
    assert not list((tmp_path / "runs" / "models").glob("*.part*"))  # atomic_path's temporary files


def _lps_copy(src, dst):
    """The same volume stored LPS: first two axes flipped, affine adjusted so world positions are unchanged."""
    img = nib.load(src)
    data = np.asanyarray(img.dataobj)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    nib.save(nib.Nifti1Image(data[::-1, ::-1].copy(), img.affine @ flip), dst)


def test_inference_writes_masks_in_the_input_geometry(trained, msd, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in ("hippocampus_001", "hippocampus_004"):
        (inputs / f"{case}.nii.gz").write_bytes((msd / "imagesTr" / f"{case}.nii.gz").read_bytes())
    _lps_copy(msd / "imagesTr" / "hippocampus_004.nii.gz", inputs / "lps_004.nii.gz")
    run_workflow(["inference.json"], overrides={"dataset_dir": str(inputs), "output_dir": str(tmp_path / "out"),
                                                "ckpt_path": str(trained.dir / "models" / "model.pt"),
                                                "save_probabilities": True})
    for src in sorted(inputs.iterdir()):
        case = src.name[: -len(".nii.gz")]
        seg = nib.load(tmp_path / "out" / f"{case}_seg.nii.gz")
        ref = nib.load(src)
        assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine, atol=1e-5)
        assert seg.get_data_dtype() == np.uint8
        assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1, 2}
        prob = nib.load(tmp_path / "out" / f"{case}_prob.nii.gz")
        assert prob.shape == (*ref.shape, 3)
        assert np.allclose(np.asanyarray(prob.dataobj).sum(-1), 1, atol=1e-3)
    # the LPS copy holds the same voxels in another order: its outputs are the RAS copy's in that order
    for kind in ("seg", "prob"):
        ras = np.asanyarray(nib.load(tmp_path / "out" / f"hippocampus_004_{kind}.nii.gz").dataobj)
        lps = np.asanyarray(nib.load(tmp_path / "out" / f"lps_004_{kind}.nii.gz").dataobj)
        assert np.allclose(lps[::-1, ::-1], ras, atol=1e-4), kind
    assert np.ptp(ras) > 0.01  # probabilities vary over the volume, so the comparison has teeth


def test_two_process_gloo_training_writes_only_on_rank_0(tmp_path):
    result = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
                     "run", "--config_file", configs("train.json", "multi_gpu_train.json"), "--epochs", "1",
                     "--max_cases", "4", "--num_threads", "1", "--output_dir", str(tmp_path / "runs"),
                     "--ckpt_dir", str(tmp_path / "models"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state), "DDP wrapper leaked into the checkpoint"
    # one TensorBoard writer for training and one for validation: rank 1 wrote none
    assert len(list((tmp_path / "runs").glob("events.out.tfevents*"))) == 2
    history = json.loads((tmp_path / "runs" / "history.json").read_text())["epochs"]
    assert len(history) == 1 and "val_whole_dice" in history[0]


def test_metadata_network_checks_and_torchscript_export(trained, tmp_path):
    """MONAI's own bundle checks (``python -m monai.bundle verify_metadata / verify_net_in_out / ckpt_export`` are these
    functions), each raising on a failure: the metadata against the model-zoo schema, the network's shapes, and a
    TorchScript export of the trained weights that computes what the network computes."""
    from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out

    from hipposeg.model import build_network, load_weights

    schema = BUNDLE.parents[1].parent / "shared" / "schemas" / "meta_schema_20240725.json"
    assert schema.is_file(), schema
    meta, infer = str(CONFIGS / "metadata.json"), str(CONFIGS / "inference.json")
    verify_metadata(meta_file=meta, filepath=str(schema))
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=infer)
    ckpt = trained.dir / "models" / "model.pt"
    ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(ckpt), meta_file=meta,
                config_file=infer)
    net = load_weights(build_network(3, 3), ckpt).eval()
    scripted = torch.jit.load(str(tmp_path / "model.ts"), map_location="cpu").eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(net(x), scripted(x), atol=1e-5)


def test_mrihs_trains_and_infers_by_override_only(tmp_path):
    from mrihs_fixture import make_mrihs_fixture

    from hipposeg.data.mrihs import import_mrihs

    info = make_mrihs_fixture(tmp_path / "kaggle", n_train=4, n_test=1, n_slices=10, rows=70, cols=60)
    report = import_mrihs(info["root"], tmp_path / "mrihs", progress=False)
    assert len(report.imported) == 4
    cases = json.loads((tmp_path / "mrihs" / "manifest.json").read_text())["cases"]
    fold = next(c["fold"] for c in cases if c["split"] == "train")
    run_workflow(["train.json"], overrides={
        "dataset": "mrihs", "dataset_dir": str(tmp_path / "mrihs"), "slice_axes": [2], "inference_axes": [2],
        "fold": fold, "epochs": 1, "output_dir": str(tmp_path / "runs"), "ckpt_dir": str(tmp_path / "models")})
    run_workflow(["inference.json"], overrides={
        "dataset": "mrihs", "dataset_dir": str(tmp_path / "mrihs" / "imagesTs"), "inference_axes": [2],
        "output_dir": str(tmp_path / "out"), "ckpt_path": str(tmp_path / "models" / "model.pt")})
    src = next((tmp_path / "mrihs" / "imagesTs").iterdir())
    seg = nib.load(tmp_path / "out" / src.name.replace(".nii.gz", "_seg.nii.gz"))
    assert seg.shape == nib.load(src).shape == (60, 70, 10)


def test_fine_tuning_starts_from_the_given_weights():
    """``--init_weights``: the training network starts from a checkpoint's weights (the shipped core fine-tuned by
    bench row core-trust-ft), also in the multi-GPU overlay; without it, from the fresh initialisation."""
    from hipposeg.bundle import parse_bundle

    shipped = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    key = next(k for k, v in shipped.items() if torch.is_floating_point(v) and v.ndim == 4)
    for names in (["train.json"], ["train.json", "multi_gpu_train.json"]):
        parser = parse_bundle(names, BUNDLE, {"init_weights": str(BUNDLE / "models" / "model.pt"),
                                              "device": "$torch.device('cpu')"})
        network = parser.get_parsed_content("initial_network")
        assert torch.equal(network.state_dict()[key], shipped[key].float())
    fresh = parse_bundle(["train.json"], BUNDLE, {"device": "$torch.device('cpu')"}).get_parsed_content("network")
    assert not torch.equal(fresh.state_dict()[key], shipped[key].float())
