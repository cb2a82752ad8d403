"""Pieces of the bundle's training workflow that stock MONAI lacks.

* :class:`WholeDiceMetric` / :func:`whole_dice_handler` — volumetric Dice of the whole hippocampus
  (all foreground labels merged; MONAI's ``DiceMetric``, the definition of :func:`hipposeg.metrics.dice`),
  the key validation metric.
* :class:`TrainingHistory` — one JSON file with loss, learning rate, validation metrics and wall time per
  epoch (the source of the training curve and of "time to reach Dice 0.88").
* :class:`TimeLimit` — stop training after a wall-clock budget (benchmarks compare recipes at equal time).
* :class:`TrainingCheckpoint` / :func:`check_resume_checkpoint` — save and resume the whole training state; a
  file that cannot resume this network is one line naming it, before any data is loaded (``hipposeg train``).
* :func:`init_distributed`, :func:`distributed_device`, :func:`wrap_ddp` — DDP on GPUs (NCCL) or, without
  GPUs, on CPU processes (gloo).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import DiceMetric
from monai.utils import MetricReduction


class WholeDiceMetric(DiceMetric):
    """MONAI's ``DiceMetric`` of the merged foreground (all labels > 0) per case, from one-hot predictions and
    labels ``(B, C, ...)``: the per-case values are ``compute_dice(..., ignore_empty=False)``, the definition of
    :func:`hipposeg.metrics.dice` (1.0 when both are empty), averaged over cases by ``reduction``."""

    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN):
        super().__init__(include_background=True, reduction=reduction, ignore_empty=False)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super()._compute_tensor(_merged_foreground(y_pred), _merged_foreground(y))


def _merged_foreground(one_hot: torch.Tensor) -> torch.Tensor:
    """``(B, 1, ...)``: 1.0 where any foreground channel (1, 2, ...) of ``(B, C, ...)`` is set."""
    return (one_hot[:, 1:].sum(1, keepdim=True) > 0).float()


def whole_dice_handler(output_transform, save_details: bool = False) -> IgniteMetricHandler:
    return IgniteMetricHandler(metric_fn=WholeDiceMetric(), output_transform=output_transform,
                               save_details=save_details)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


class TrainingHistory:
    """Write ``history.json``: per epoch the mean loss, learning rate, wall time and validation metrics.

    Attach to the trainer after the ``ValidationHandler`` so that the epoch's validation has run.
    """

    def __init__(self, output_dir: str, evaluator=None, optimizer=None, filename: str = "history.json"):
        self.path = Path(output_dir) / filename
        self.evaluator, self.optimizer = evaluator, optimizer
        self.epochs: list[dict] = []
        self._losses: list[float] = []
        self._start = 0.0
        self._offset: float | None = None
        self._pending: dict = {}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if self.evaluator is not None:  # collect each validation's metrics when it completes
            self.evaluator.add_event_handler(Events.COMPLETED, self._validated)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _started(self, engine) -> None:
        # A resumed run: keep the earlier epochs; those at or after the resumed epoch are trimmed in _epoch,
        # because CheckpointLoader restores engine.state.epoch only after this STARTED handler has run.
        if self.path.is_file() and not self.epochs:
            try:
                self.epochs = json.loads(self.path.read_text())["epochs"]
            except (ValueError, KeyError):
                self.epochs = []
        self._start = time.perf_counter()
        self._offset = None

    def _validated(self, evaluator) -> None:
        self._pending = {k if k.startswith("val") else f"val_{k}": float(v)
                         for k, v in evaluator.state.metrics.items() if isinstance(v, (int, float))}

    def _iteration(self, engine) -> None:
        out = engine.state.output
        items = out if isinstance(out, list) else [out]
        for item in items:
            if isinstance(item, dict) and "loss" in item:
                self._losses.append(float(item["loss"]))

    def _epoch(self, engine) -> None:
        if self._offset is None:  # first epoch of this run: drop records a resumed run replaces
            self.epochs = [e for e in self.epochs if e["epoch"] < engine.state.epoch]
            self._offset = self.epochs[-1]["elapsed_s"] if self.epochs else 0.0
        elapsed = self._offset + time.perf_counter() - self._start
        record = {"epoch": engine.state.epoch, "elapsed_s": round(elapsed, 2),
                  "loss": sum(self._losses) / max(len(self._losses), 1)}
        self._losses = []
        if self.optimizer is not None:
            record["lr"] = self.optimizer.param_groups[0]["lr"]
        record.update(self._pending)
        self._pending = {}
        self.epochs.append(record)
        if _rank() == 0:
            from hipposeg.data.writers import write_text

            write_text(self.path, json.dumps({"epochs": self.epochs}, indent=1), overwrite=True)


class TimeLimit:
    """Terminate training at the end of the first epoch that ends after ``minutes`` of wall time."""

    def __init__(self, minutes: float | None = None):
        self.seconds = None if not minutes else float(minutes) * 60
        self._start = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if self.seconds is None:
            return
        engine.add_event_handler(Events.STARTED, lambda e: setattr(self, "_start", time.perf_counter()))
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._check)

    def _check(self, engine) -> None:
        stop = torch.tensor(float(time.perf_counter() - self._start >= self.seconds))
        if torch.distributed.is_initialized():  # every rank stops after the same epoch, or DDP deadlocks
            backend = torch.distributed.get_backend()
            flag = stop.to("cuda") if backend == "nccl" else stop
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = flag.cpu()
        if stop.item() > 0:
            engine.terminate()


def init_distributed(*, cuda: bool | None = None, timeout=None) -> str:
    """Join the default process group that ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``, ...):
    NCCL with each rank on GPU ``LOCAL_RANK`` when ``cuda`` (default: whenever GPUs are present), else gloo on CPU
    processes; ``timeout`` (a ``datetime.timedelta``) replaces torch's default. Returns the backend. hipposeg's one
    DDP set-up: training (``multi_gpu_train.json``) and the BIDS App (``hipposeg bids ... --distributed``)."""
    import torch.distributed as dist

    cuda = torch.cuda.is_available() if cuda is None else bool(cuda)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, **({"timeout": timeout} if timeout is not None else {}))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return backend


def distributed_device(cuda: bool | None = None) -> torch.device:
    """This rank's device: GPU ``LOCAL_RANK`` when ``cuda`` (default: whenever GPUs are present), else the CPU."""
    if torch.cuda.is_available() if cuda is None else cuda:
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def wrap_ddp(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    network = network.to(device)
    ids = [device] if device.type == "cuda" else None
    # smp's EfficientNet encoder keeps layers its U-Net never uses (the classification head): DDP must know
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=ids, find_unused_parameters=True)


def set_threads(num_threads: int | None) -> None:
    """CPU settings for training and inference: flush denormal floats to zero (trained weights and gradients
    produce them, and CPUs compute on them up to 10x slower), and limit intra-op threads (0 or None keeps
    PyTorch's default)."""
    torch.set_flush_denormal(True)
    if num_threads:
        torch.set_num_threads(int(num_threads))


RESUME_KEYS = ("network", "optimizer", "trainer")  # saved by TrainingCheckpoint (with lr_scheduler when there is one)


def check_resume_checkpoint(path: str | Path, *, network: torch.nn.Module, max_epochs: int | None = None) -> None:
    """Raise an :class:`~hipposeg.errors.InputError` (one line naming the file) unless ``path`` is a training
    checkpoint (a ``checkpoint*.pt`` that :class:`TrainingCheckpoint` wrote: :data:`RESUME_KEYS`) whose
    network weights have the names and shapes of ``network``'s, at an epoch not past ``max_epochs``. Reads the
    file safely (``weights_only``, as MONAI's ``CheckpointLoader`` does); run it before any data is loaded."""
    from hipposeg.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint file to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a PyTorch checkpoint ({type(exc).__name__})") from None
    missing = [key for key in RESUME_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise InputError(path, f"not a training checkpoint (no {', '.join(missing)} state; resume from the "
                               "checkpoint*.pt that training writes in its output folder, not from a model.pt)")
    expected = {k: tuple(v.shape) for k, v in getattr(network, "module", network).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state["network"].items() if isinstance(v, torch.Tensor)}
    if found != expected:
        differ = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        raise InputError(path, f"a checkpoint of another network ({len(differ)} weights differ from the configured "
                               f"network, e.g. {differ[0]!r})")
    trainer = state["trainer"]
    done = int(trainer.get("iteration", 0)) // max(int(trainer.get("epoch_length") or 1), 1)
    if max_epochs is not None and done > int(max_epochs):  # MONAI's CheckpointLoader refuses this, after loading
        raise InputError(path, f"already trained {done} epochs, more than the {max_epochs} asked for; give "
                               "--epochs above that to continue")


class TrainingCheckpoint:
    """Save the whole training state every ``interval`` epochs and at the end, and resume from one.

    One handler for both directions, so the trainer can be part of what it saves without the bundle config
    referring to the trainer from inside the trainer's own handler list. ``final_model_path``: also write the
    network's weights there (the ``model.pt`` that inference loads) when training completes, and only then, for
    runs without a validation fold, where no best epoch exists to be saved (``fold: null``: train on every case).
    """

    def __init__(self, save_dir: str, network, optimizer, lr_scheduler=None, resume_from: str | None = None,
                 interval: int = 1, map_location="cpu", final_model_path: str | None = None):
        self.save_dir, self.resume_from, self.interval, self.map_location = save_dir, resume_from, interval, map_location
        self.final_model_path = final_model_path
        self.objects = {"network": network, "optimizer": optimizer}
        if lr_scheduler is not None:
            self.objects["lr_scheduler"] = lr_scheduler

    def attach(self, engine) -> None:
        from monai.handlers import CheckpointLoader, CheckpointSaver

        objects = {**self.objects, "trainer": engine}
        if self.resume_from:
            check_resume_checkpoint(self.resume_from, network=self.objects["network"],
                                    max_epochs=engine.state.max_epochs)
            CheckpointLoader(load_path=self.resume_from, load_dict=objects, map_location=self.map_location).attach(engine)
        if _rank() == 0:
            CheckpointSaver(save_dir=self.save_dir, save_dict=objects, file_prefix="checkpoint",
                            save_interval=self.interval, save_final=True, final_filename="checkpoint_final.pt",
                            n_saved=1).attach(engine)
            if self.final_model_path:
                from ignite.engine import Events

                engine.add_event_handler(Events.COMPLETED, self._save_final_model)

    def _save_final_model(self, engine) -> None:
        """The network's weights as ``final_model_path``, written atomically (replacing it, as the best-epoch
        saver replaces its ``model.pt``)."""
        from hipposeg.data.writers import atomic_path

        network = self.objects["network"]
        with atomic_path(self.final_model_path, overwrite=True) as tmp:
            torch.save(getattr(network, "module", network).state_dict(), tmp)


class _NoOpHandler:
    def attach(self, engine) -> None:
        pass


def tensorboard_handler(**kwargs):
    """MONAI's ``TensorBoardStatsHandler`` on rank 0 (or without DDP); a handler that does nothing elsewhere,
    so other ranks never open an event file."""
    if _rank() != 0:
        return _NoOpHandler()
    from monai.handlers import TensorBoardStatsHandler

    return TensorBoardStatsHandler(**kwargs)
