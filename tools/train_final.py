"""Train the shipped networks (the default's 2.5D core; the opt-in 3D partner on request) on every labelled case,
with the recipes and epoch counts fixed by cross-validation (``bench/README.md``, "Cross-validation"), and export
them in half precision.

    python tools/train_final.py                      # the 2.5D core (the default model since 0.8.0), then
                                                     # its fine-tuning with configs/train_trust.json (0.9.0)
    python tools/train_final.py --only core --only partner   # the core, then the opt-in 3D partner
    python tools/train_final.py --only core --install    # then copy the export over bundles/hipposeg/models/

Each network trains through the bundle exactly as the cross-validation rows did (``train.json``; plus
``train_3d.json`` for the partner), with ``--fold '$None'``: every labelled case trains, no validation runs and
the final epoch is kept, so nothing is chosen on data that trained it. A run that was killed continues from its
last epoch checkpoint when started again. Runs go to ``bench/runs/final-<network>/`` (``--runs``), with the
half-precision export ``model_fp16.pt`` and ``report.json`` (command, wall time of the last part, epochs, size and
sha256 of the export). Such a model cannot be scored on Task04 (every case
trained it): its accuracy is its recipe's cross-validated figure, its checks are ``bench/fullhead.py`` and
``bench/speed.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import CONFIGS, REPO, RUNS, bundle_command, run_logged, shown, shown_command  # noqa: E402

from hipposeg.bundle import parse_overrides  # noqa: E402
from hipposeg.data.writers import atomic_path, write_text  # noqa: E402

MODELS = REPO / "bundles" / "hipposeg" / "models"

# network: (bundle configs, the shipped file it becomes)
NETWORKS = {
    "core": (["train.json"], "model.pt"),
    "partner": (["train.json", "train_3d.json"], "model_3d.pt"),
}
# a second stage that starts from the first one's weights (bench row core-trust-ft: the shipped core since 0.9.0)
FINE_TUNING = {
    "core": (["train.json", "train_trust.json"], {"epochs": 4, "learning_rate": 3e-4}),
}


def _last_epoch_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("checkpoint_checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
    return found[-1] if found else None


def train(network: str, runs: Path = RUNS, extra: dict | None = None) -> dict:
    """Train (or finish training) one network on every case, then its fine-tuning stage when it has one
    (:data:`FINE_TUNING`); export the final epoch in half precision."""
    configs, _ = NETWORKS[network]
    report = _train_stage(network, configs, runs / f"final-{network}", extra or {})
    if network in FINE_TUNING:
        configs, settings = FINE_TUNING[network]
        start = {"init_weights": str(runs / f"final-{network}" / "model.pt")}
        report = _train_stage(network, configs, runs / f"final-{network}-fine-tuned", {**settings, **start,
                                                                                     **(extra or {})})
    return report


def _train_stage(network: str, configs: list[str], out: Path, extra: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "model.pt").is_file():  # written only when training completed
        print(f"{network}: {shown(out / 'model.pt')} exists, training skipped", flush=True)
    else:
        overrides = {"fold": "$None", "seed": 0, "output_dir": str(out), "ckpt_dir": str(out), **extra}
        resume = _last_epoch_checkpoint(out)
        if resume is not None:
            overrides["resume_from"] = str(resume)
        cmd = bundle_command([CONFIGS / c for c in configs], overrides)
        wall = run_logged(cmd, out / "train.log")
        _write_report(out, {"network": network, "train_command": shown_command(cmd), "train_wall_s": round(wall, 1),
                                "resumed_from": shown(resume) if resume is not None else None})
    from hipposeg.data.manifest import sha256_of
    from hipposeg.model import save_half_precision

    export = save_half_precision(out / "model.pt", out / "model_fp16.pt", overwrite=True)
    history = json.loads((out / "history.json").read_text())["epochs"]
    report = {"epochs": history[-1]["epoch"], "export": shown(export),
              "export_mb": round(export.stat().st_size / 1e6, 2),
              "export_sha256": sha256_of(export)}
    return _write_report(out, report)


def _write_report(run_dir: Path, fields: dict) -> dict:
    """Add ``fields`` to ``run_dir/report.json``."""
    path = run_dir / "report.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    report.update({"fold": None, "cases": "every labelled case of the dataset", **fields})
    write_text(path, json.dumps(report, indent=1) + "\n", overwrite=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(NETWORKS), action="append",
                        help="train this network (repeatable; default: core, the default model's only network)")
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder for the runs (default: bench/runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="extra bundle override, e.g. max_cases=4 epochs=2 for a smoke run")
    parser.add_argument("--install", action="store_true",
                        help="copy each export over the bundle's shipped file (models/model.pt, models/model_3d.pt)")
    args = parser.parse_args(argv)
    extra = parse_overrides(args.set)
    for network in args.only or ["core"]:
        start = time.perf_counter()
        report = train(network, args.runs, extra)
        print(f"{network}: {report['epochs']} epochs, {report['export']} ({report['export_mb']} MB), "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        if args.install:
            target = MODELS / NETWORKS[network][1]
            with atomic_path(target, overwrite=True) as tmp:
                shutil.copyfile(REPO / report["export"], tmp)
            print(f"installed {shown(target)}", flush=True)
            if network == "core":  # OpenVINO's int8 copy belongs to the old weights: it is ignored until remade
                print("then: python -m hipposeg.quantize --overwrite (needs nncf, openvino and the Task04 data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
