"""The ``hipposeg`` command's doors: light start-up for ``info``/``--help``, one-line errors for bad checkpoints."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from conftest import run_cli

# scipy's top level comes with nibabel (a few ms); its heavy subpackages must not
HEAVY = ("torch", "monai", "segmentation_models_pytorch", "SimpleITK", "scipy.ndimage", "scipy.sparse", "matplotlib",
         "nilearn")


def test_info_and_help_import_no_heavy_library(msd, tmp_path):
    """``hipposeg info`` (NIfTI), ``--help`` and ``segment`` of inputs that are all missing start without torch,
    MONAI, SimpleITK... (5-10 s and 1.2 GB before; about 0.5 s and 50 MB now). Asserted on the imported modules,
    not on a flaky wall-clock bound."""
    crop = msd / "imagesTr" / "hippocampus_001.nii.gz"
    missing = [str(tmp_path / "missing.nii.gz"), str(tmp_path / "gone")]
    script = textwrap.dedent(f"""
        import sys
        from hipposeg.cli import main
        assert main(["info", {str(crop)!r}]) == 0
        assert main(["segment", *{missing!r}, "-o", {str(tmp_path / "out")!r}]) == 2
        for argv in (["--help"], ["segment", "--help"], ["train", "--help"]):
            try:
                main(argv)
            except SystemExit as exc:
                assert exc.code == 0, argv
        print("HEAVY", *sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    result = run_cli("-c", script)
    assert result.returncode == 0, result.stderr
    assert "35x51x35" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "HEAVY"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {path}: no such file or folder" for path in missing], result.stderr


def test_runtime_choices_are_the_runtimes_choose_runtime_takes(capsys):
    """``--runtime`` offers the one tuple :func:`hipposeg.runtime.choose_runtime` checks against (defined without
    torch, so ``--help`` stays light)."""
    from hipposeg.cli import build_parser
    from hipposeg.runtime import RUNTIMES

    parser = build_parser()
    for runtime in RUNTIMES:
        assert parser.parse_args(["segment", "--runtime", runtime]).runtime == runtime
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "--runtime", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def _training_checkpoint(folder, network, *, epochs_done=2):
    """The checkpoint_final.pt that training writes (TrainingCheckpoint, MONAI's CheckpointSaver) for ``network``
    after ``epochs_done`` epochs of 5 iterations: saved by the real handler, no training step run."""
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    from hipposeg.training import TrainingCheckpoint

    optimizer = torch.optim.AdamW(network.parameters())
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, epochs=20, steps_per_epoch=5)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=20, train_data_loader=[{}] * 5,
                                network=network, optimizer=optimizer, loss_function=torch.nn.MSELoss())
    TrainingCheckpoint(str(folder), network, optimizer, scheduler).attach(trainer)
    trainer.state.epoch, trainer.state.iteration = epochs_done, 5 * epochs_done
    for handler, args, kwargs in trainer._event_handlers[Events.COMPLETED]:  # what the end of training fires
        handler(trainer, *args[1:], **kwargs)
    return Path(folder) / "checkpoint_final.pt"


@pytest.fixture(scope="module")
def configured_network():
    from hipposeg.bundle import parse_bundle

    return parse_bundle(["train.json"]).get_parsed_content("network_def")


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, configured_network):
    """Each kind of bad --resume-from file once, with the problem its one-line error must name."""
    from hipposeg.bundle import shipped_model

    folder = tmp_path_factory.mktemp("checkpoints")
    text = folder / "notes.pt"
    text.write_text("not a checkpoint\n")
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 3, 1))
    return {
        "missing": (folder / "missing.pt", "no such checkpoint file"),
        "text": (text, "not a PyTorch checkpoint"),
        "model weights": (shipped_model("default"), "not a training checkpoint"),
        "other network": (_training_checkpoint(folder / "other", other), "another network"),
        "too many epochs": (_training_checkpoint(folder / "late", configured_network, epochs_done=13),
                            "already trained 13 epochs"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "model weights", "other network", "too many epochs"])
def test_train_refuses_a_bad_resume_checkpoint_before_loading_data(tmp_path, cli, bad_checkpoints, case):
    """One line naming the file, exit 2, before training: the data root is empty, so any step that touched the
    data first would report the missing dataset instead."""
    path, problem = bad_checkpoints[case]
    result = cli("train", "--resume-from", path, "--epochs", "12", "--data-root", tmp_path / "no_data",
                 "--output-dir", tmp_path / "run")
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and problem in err[0]
    assert not (tmp_path / "run").exists()


def test_train_accepts_a_matching_resume_checkpoint(tmp_path, cli, configured_network):
    """A checkpoint of the configured network passes the check; training then stops at the missing data."""
    path = _training_checkpoint(tmp_path / "earlier_run", configured_network)
    result = cli("train", "--resume-from", path, "--epochs", "12", "--data-root", tmp_path / "no_data",
                 "--output-dir", tmp_path / "run")
    assert result.returncode == 2 and "dataset 'msd_hippocampus' not found" in result.stderr
    assert str(path) not in result.stderr
