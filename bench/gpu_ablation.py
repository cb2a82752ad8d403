#!/usr/bin/env python3
"""GPU ablation: which training / inference choices of the hipposeg bundle buy what, in one timed run.

Trains several variants of the shipped bundle (``bundles/hipposeg/configs/train.json`` plus small overlay
configs, run through ``python -m monai.bundle run`` exactly as users run it) for the same number of epochs,
evaluates each on fold 0 with ``evaluate.json`` (per-volume Dice whole / anterior / posterior, HD95; read from
the ``summary.json`` and ``metrics.csv`` the evaluator writes), and re-evaluates the ``default`` checkpoint with
inference-only variants (one slicing axis, three-axis consensus, flip TTA, no largest-component step).

Training variants (everything else = bundle defaults):

* ``default``             context 3, axes [0,1,2], empty_fraction 0.2, AdamW + one-cycle (per iteration)
* ``2d``                  context 1
* ``context5``            context 5
* ``no-empty``            empty_fraction 0
* ``empty30``             empty_fraction 0.3
* ``axis2-only``          slice_axes [2], inference_axes [2]
* ``plateau``             only the optimizer / scheduler keys of ``bench/configs/reference_recipe.json``
                          (Adam without weight decay, ReduceLROnPlateau on the validation Dice, epoch-level)
* ``reference``           the whole reference overlay (2D axial, non-empty slices, Adam + plateau, no LCC)
* ``default-half-epochs`` default with half the epochs
* ``scale1.5``, ``scale2`` slices upsampled 1.5x / 2x inside the network (``input_scale``)
* ``scale1.5-8ep``        1.5x with 8 epochs whatever ``--epochs`` says (what fits an hour on 2 CPU cores)

Several runs share the one GPU as parallel processes (``--parallel``); their wall times therefore depend on
what ran beside them and compare only roughly. A global time budget keeps the whole run inside a device lease:
jobs not started in time are skipped, training gets the bundle's ``max_minutes`` as a safety stop (it ends
after the first epoch past it), anything still running at the end is killed, and the results of what finished
are written after every job (``gpu_ablation.json`` and ``gpu_ablation.md`` in ``--out-dir``).

TensorBoard handlers are left out of the runs (overlay replacing ``train#handlers`` / ``validate#handlers`` by
the same lists without ``TensorBoardStatsHandler``), since the GPU machine may lack TensorBoard.

    python bench/gpu_ablation.py --epochs 4 --parallel 9 --num-workers 2 --budget 425   # GPU machine
    python bench/gpu_ablation.py --epochs 1 --max-cases 4 --device cpu \\
        --parallel 1 --variants default reference --budget 300                    # CPU smoke test
    python bench/gpu_ablation.py --render bench/results/gpu_ablation.json           # rebuild the table only

Sizing (one H100, 2026-11-26): 9 runs in parallel with num_workers 2 trained about 60 iterations (batch 32) per
second all together, i.e. ~75 s per default-size epoch (~550 iterations) per run. All nine variants at E epochs
are about 3,850 * E iterations, so --epochs 8 (~30,000) does NOT fit a 425 s budget (that run stopped the big
variants at epoch 4 of 8); --epochs 4 (~15,000, ~260 s) should, by that estimate.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import BENCH, CONFIGS, REPO, config_arg, paired, shown_command, this_command, write_result
from hipposeg.data.writers import write_text

REFERENCE = BENCH / "configs" / "reference_recipe.json"

# keys of the reference overlay that make up its optimisation recipe (the "plateau" variant)
PLATEAU_KEYS = ("optimizer#_target_", "weight_decay", "lr_scheduler", "lr_schedule_per_iteration",
                "train#handlers#0#step_transform")

TRAIN_VARIANTS: dict[str, dict] = {
    "default": {"about": "context 3, axes [0,1,2], 20% empty slices, AdamW one-cycle", "set": {}},
    "2d": {"about": "context 1 (plain 2D)", "set": {"context": 1}},
    "context5": {"about": "context 5", "set": {"context": 5}},
    "no-empty": {"about": "empty_fraction 0", "set": {"empty_fraction": 0.0}},
    "empty30": {"about": "empty_fraction 0.3", "set": {"empty_fraction": 0.3}},
    "axis2-only": {"about": "train and infer on axial slices only", "set": {"slice_axes": [2], "inference_axes": [2]}},
    "plateau": {"about": "reference optimiser recipe only: Adam (no weight decay) + ReduceLROnPlateau on val Dice",
                "plateau": True, "set": {}},
    "reference": {"about": "full reference overlay (2D, axial, non-empty slices, Adam + plateau, no LCC)",
                  "overlays": [REFERENCE], "set": {}},
    "default-half-epochs": {"about": "default, half the epochs", "half": True, "set": {}},
    # higher-resolution slices (network option input_scale; priced on CPU by bench/archive/input_scale_cost.py)
    "scale1.5": {"about": "default, slices upsampled 1.5x (input_scale 1.5)", "set": {"input_scale": 1.5}},
    "scale1.5-8ep": {"about": "default, slices upsampled 1.5x, 8 epochs (fits an hour on 2 CPU cores)",
                     "epochs": 8, "set": {"input_scale": 1.5}},
    "scale2": {"about": "default, slices upsampled 2x (input_scale 2.0)", "set": {"input_scale": 2.0}},
}

# inference-only variants of the default checkpoint (name: evaluation overrides)
INFERENCE_VARIANTS: dict[str, dict] = {
    "default@axis0": {"about": "default model, sagittal slices only", "set": {"inference_axes": [0]}},
    "default@axis1": {"about": "default model, coronal slices only", "set": {"inference_axes": [1]}},
    "default@axis2": {"about": "default model, axial slices only", "set": {"inference_axes": [2]}},
    "default@flip-tta": {"about": "default model, consensus + left-right flip TTA", "set": {"flip_tta": True}},
    "default@no-lcc": {"about": "default model, consensus, no largest-component step", "set": {"keep_largest": False}},
    # the same configuration as the default row's own evaluation: a repeat that shows evaluation is deterministic
    "default@consensus": {"about": "default model, 3-axis consensus (= default evaluation, repeated)",
                          "set": {"inference_axes": [0, 1, 2]}},
}

METRICS = ("dice_whole", "dice_anterior", "dice_posterior", "hd95_whole_mm")


# ----------------------------------------------------------------------------------------------- configs
def _without_tensorboard(handlers: list) -> list:
    return [h for h in handlers if "TensorBoard" not in str(h.get("_target_", ""))]


def no_tensorboard_overlay() -> dict:
    train = json.loads((CONFIGS / "train.json").read_text())
    return {"train#handlers": _without_tensorboard(train["train"]["handlers"]),
            "validate#handlers": _without_tensorboard(train["validate"]["handlers"])}


def plateau_overlay() -> dict:
    ref = json.loads(REFERENCE.read_text())
    return {k: ref[k] for k in PLATEAU_KEYS if k in ref}


def common_overrides(args) -> dict:
    out = {"fold": 0, "seed": 0, "num_workers": args.num_workers, "num_threads": args.num_threads}
    if args.data_root:
        out["data_root"] = str(Path(args.data_root).resolve())
    if args.device:
        out["device"] = f"$torch.device('{args.device}')"
    if args.max_cases:
        out["max_cases"] = args.max_cases
    return out


def variant_train_overrides(name: str, args) -> dict:
    v = TRAIN_VARIANTS[name]
    out = {"epochs": v.get("epochs") or (max(1, args.epochs // 2) if v.get("half") else args.epochs)}
    if v.get("plateau"):
        out.update(plateau_overlay())
    out.update(v["set"])
    return out


def _write_json(path: Path, data) -> Path:
    return write_result(path, data)  # atomic: results files are published


# ----------------------------------------------------------------------------------------------- jobs
class Job:
    def __init__(self, name: str, kind: str, files: list[Path], workdir: Path, log: Path, row: dict):
        self.name, self.kind, self.files, self.workdir, self.log, self.row = name, kind, files, workdir, log, row
        self.proc: subprocess.Popen | None = None
        self.start = self.end = None
        self.killed = False
        self._fh = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg([str(f) for f in self.files])]

    def launch(self, env: dict) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.log, "w")
        self.start = time.perf_counter()
        # own process group, so that a kill also ends the run's DataLoader workers
        self.proc = subprocess.Popen(self.command, stdout=self._fh, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                     start_new_session=True)

    def poll(self):
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is not None and self.end is None:
            self.end = time.perf_counter()
            self._fh.close()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            self.proc.wait()
            self.poll()

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def make_train_job(name: str, args, runs: Path, notb: Path | None, max_minutes: float | None) -> Job:
    run = runs / name
    run.mkdir(parents=True, exist_ok=True)
    overrides = {**common_overrides(args), **variant_train_overrides(name, args),
                 "output_dir": str(run), "ckpt_dir": str(run)}
    if max_minutes is not None:
        overrides["max_minutes"] = round(max(max_minutes, 0.05), 3)
    files = [CONFIGS / "train.json"] + ([notb] if notb else []) + list(TRAIN_VARIANTS[name].get("overlays", []))
    files.append(_write_json(run / "variant_train.json", overrides))
    row = {"variant": name, "kind": "train", "about": TRAIN_VARIANTS[name]["about"],
           "overrides": variant_train_overrides(name, args),
           "overlays": [str(p.relative_to(REPO)) for p in TRAIN_VARIANTS[name].get("overlays", [])],
           "epochs_planned": overrides["epochs"], "max_minutes_safety": overrides.get("max_minutes")}
    return Job(name, "train", files, run, run / "train.log", row)


def make_eval_job(name: str, trained: str, eval_set: dict, about: str, args, runs: Path, notb: Path | None) -> Job:
    """Score a trained variant as ``bench/accuracy.py`` does: ``inference.json`` + ``evaluate.json`` (its overlay),
    with the variant's settings that inference knows (``context``, ``inference_axes``, ... and an overlay's
    ``validate#inferer``), the checkpoint alone."""
    from accuracy import inference_overrides

    out = runs / trained / ("eval" if name == trained else f"eval_{name.split('@', 1)[-1]}")
    known = {**json.loads((CONFIGS / "inference.json").read_text()), **json.loads((CONFIGS / "evaluate.json").read_text())}
    settings = {**common_overrides(args), **variant_train_overrides(trained, args)}
    overrides = {**{k: v for k, v in settings.items() if k in known},
                 **inference_overrides([str(p) for p in TRAIN_VARIANTS[trained].get("overlays", [])]), **eval_set,
                 "ckpt_path": str(runs / trained / "model.pt"), "output_dir": str(out), "use_partner": False}
    files = [CONFIGS / "inference.json", CONFIGS / "evaluate.json", _write_json(out / "variant_eval.json", overrides)]
    row = {"variant": name, "kind": "train" if name == trained else "inference", "about": about,
           "trained": trained, "eval_overrides": eval_set}
    return Job(name, "eval", files, out, out / "eval.log", row)


# ----------------------------------------------------------------------------------------------- results
def read_history(run: Path) -> dict:
    """Epochs, trainer clock, loss and learning rate from ``history.json``; validation Dice per epoch from the
    training log's ``Epoch[N] Metrics -- ... val_whole_dice: X`` lines (``history.json`` holds only the first
    validation: ``TrainingHistory`` compares the evaluator's iteration count, which is the same every run)."""
    path = run / "history.json"
    if not path.is_file():
        return {}
    epochs = json.loads(path.read_text()).get("epochs", [])
    if not epochs:
        return {}
    out = {"epochs_done": len(epochs), "train_elapsed_s": epochs[-1]["elapsed_s"],
           "final_loss": epochs[-1].get("loss"), "final_lr": epochs[-1].get("lr")}
    val = {}
    log = run / "train.log"
    if log.is_file():
        for m in re.finditer(r"Epoch\[(\d+)\] Metrics -- .*?val_whole_dice: ([0-9.eE+-]+)", log.read_text(errors="replace")):
            val[int(m.group(1))] = float(m.group(2))
    if val:
        best = max(val, key=val.get)
        out.update({"val_whole_dice_per_epoch": [val.get(e) for e in range(1, max(val) + 1)],
                    "best_val_whole_dice": val[best], "best_epoch": best})
    return out


def read_cases(out: Path) -> dict[str, dict]:
    path = out / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["case"]: {k: float(r[k]) for k in METRICS if r.get(k) not in (None, "")} for r in csv.DictReader(f)}


def paired_delta(cases: dict, base: dict, key: str = "dice_whole") -> dict | None:
    """``common.paired`` of one metric, with how many volumes got better and worse."""
    a, b = ({c: v[key] for c, v in side.items() if key in v} for side in (cases, base))
    p = None if cases is base else paired(a, b)
    if p is None:
        return None
    d = [a[c] - b[c] for c in a if c in b and math.isfinite(a[c]) and math.isfinite(b[c])]
    return {"mean": p[0], "se": p[1], "n": p[2], "better": sum(x > 0 for x in d), "worse": sum(x < 0 for x in d)}


def status_text(r: dict) -> str:
    """One line for a row: training status (training variants) and evaluation status."""
    train = r.get("train_status", r.get("status") if r.get("kind") == "train" else None)
    evaluation = r.get("eval_status") or ("ok" if r.get("summary") else None)
    parts = []
    if r.get("kind") == "train" and train:
        done, planned = r.get("epochs_done"), r.get("epochs_planned")
        note = f" at {done}/{planned} epochs" if train != "ok" and done is not None and planned else ""
        parts.append(f"train {train}{note}")
    if evaluation:
        parts.append(f"eval {evaluation}")
    return "; ".join(parts) or str(r.get("status", "?"))


def _fmt(v, digits=3):
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [f"# GPU ablation ({meta['device_name']}, {meta['date']})", "",
             f"{meta['epochs']} epochs per training variant (half-epochs variant: {max(1, meta['epochs'] // 2)}), "
             f"fold 0 validation ({meta.get('n_val_cases', '?')} volumes), up to {meta['parallel']} runs in parallel "
             f"on the one GPU (train seconds depend on what ran beside them), num_workers {meta['num_workers']}. "
             "Δ = paired per-volume mean difference of whole-hippocampus Dice against `default` ± its standard error "
             "(case-sampling noise only; seed-to-seed training noise is not measured).", "",
             f"Command: `{meta['command']}`", ""]
    if meta.get("delta_base"):
        lines += [f"Δ here is against the {meta['delta_base']}.", ""]
    lines += [
             "| variant | kind | what | epochs | train s | Dice whole | anterior | posterior | HD95 mm | "
             "Δ Dice whole vs default | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        s = r.get("summary", {})
        get = lambda k: s.get(k, {}).get("mean")  # noqa: E731
        d = r.get("delta_dice_whole_vs_default")
        delta = "–" if d is None else f"{d['mean']:+.4f} ± {d['se']:.4f}"
        epochs = r.get("epochs_done")
        ep = "–" if epochs is None else (f"{epochs}" if epochs == r.get("epochs_planned", epochs) else
                                         f"{epochs}/{r.get('epochs_planned')}")
        secs = r.get("train_elapsed_s")
        lines.append(f"| `{r['variant']}` | {r['kind']} | {r['about']} | {ep} | {_fmt(secs, 0)} | "
                     f"{_fmt(get('dice_whole'), 4)} | {_fmt(get('dice_anterior'), 4)} | {_fmt(get('dice_posterior'), 4)} | "
                     f"{_fmt(get('hd95_whole_mm'), 2)} | {delta} | {status_text(r)} |")
    if result.get("notes"):
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def device_name(device: str | None) -> str:
    if device and not device.startswith("cuda"):
        return f"{device} ({platform.machine()}, {os.cpu_count()} cores)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        return out.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "unknown"


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--variants", nargs="+", default=list(TRAIN_VARIANTS), choices=list(TRAIN_VARIANTS))
    p.add_argument("--no-inference-variants", action="store_true", help="skip the default model's re-evaluations")
    p.add_argument("--parallel", type=int, default=9, help="training runs at a time on the GPU")
    p.add_argument("--eval-parallel", type=int, default=6, help="evaluation runs at a time")
    p.add_argument("--num-workers", type=int, default=2, help="bundle num_workers per run")
    p.add_argument("--num-threads", type=int, default=2, help="bundle num_threads (torch CPU threads) per run")
    p.add_argument("--device", default=None, help="e.g. cpu or cuda:0 (default: the bundle's choice)")
    p.add_argument("--max-cases", type=int, default=None, help="first N cases of train and val (smoke tests)")
    p.add_argument("--data-root", default=None, help="data root holding msd_hippocampus/ (bundle key data_root)")
    p.add_argument("--budget", type=float, default=440.0, help="seconds for the whole script; see --help")
    p.add_argument("--train-start-by", type=float, default=None,
                   help="training jobs not started by then (s) are skipped (default: budget - 150)")
    p.add_argument("--eval-start-by", type=float, default=None,
                   help="evaluation jobs not started by then (s) are skipped (default: budget - 40)")
    p.add_argument("--train-stop-by", type=float, default=None,
                   help="training's safety stop: max_minutes ends it after the epoch that crosses this "
                        "(default: budget - 110); killed at budget - 70, its best checkpoint still evaluated")
    p.add_argument("--keep-tensorboard", action="store_true", help="keep the TensorBoard handlers")
    p.add_argument("--runs-dir", type=Path, default=BENCH / "runs" / "gpu_ablation")
    p.add_argument("--out-dir", type=Path, default=BENCH / "results")
    p.add_argument("--out-name", default="gpu_ablation", help="results are written to OUT_DIR/OUT_NAME.{json,md}")
    p.add_argument("--base-json", type=Path, default=None,
                   help="when `default` is not among the variants: a bench/accuracy.py result JSON (its "
                        "per_case_dice_whole) to compute the paired delta against, e.g. bench/results/default.json")
    p.add_argument("--render", type=Path, metavar="JSON", help="only rebuild the Markdown table beside a results JSON")
    return p.parse_args(argv)


def render(path: Path) -> None:
    """Rebuild ``gpu_ablation.md`` beside a results JSON (no number changes)."""
    result = json.loads(path.read_text())
    for r in result["rows"]:
        r["status"] = status_text(r)
    write_text(path.with_suffix(".md"), markdown(result), overwrite=True)
    print(path.with_suffix(".md").read_text())


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        render(args.render)
        return 0
    t0 = time.perf_counter()
    budget = args.budget
    train_start_by = args.train_start_by if args.train_start_by is not None else budget - 150
    eval_start_by = args.eval_start_by if args.eval_start_by is not None else budget - 40
    train_stop_by = args.train_stop_by if args.train_stop_by is not None else budget - 110
    train_kill_at = max(train_stop_by + 40, budget - 70)
    runs = args.runs_dir.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    notb = None if args.keep_tensorboard else _write_json(runs / "no_tensorboard.json", no_tensorboard_overlay())

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(args.num_threads or 1),
               MKL_NUM_THREADS=str(args.num_threads or 1))
    elapsed = lambda: time.perf_counter() - t0  # noqa: E731

    command = this_command(__file__, argv)
    result = {"meta": {"device_name": device_name(args.device), "date": time.strftime("%Y-%m-%d %H:%M"),
                       "epochs": args.epochs, "parallel": args.parallel, "eval_parallel": args.eval_parallel,
                       "num_workers": args.num_workers, "num_threads": args.num_threads, "max_cases": args.max_cases,
                       "budget_s": budget, "command": command, "python": platform.python_version(),
                       "tensorboard_handlers": bool(args.keep_tensorboard)},
              "rows": [], "notes": []}
    rows: dict[str, dict] = {}
    order: list[str] = []

    def add_row(name: str, row: dict) -> dict:
        if name not in rows:
            order.append(name)
            rows[name] = {}
        rows[name].update(row)
        return rows[name]

    def flush() -> None:
        base = rows.get("default", {}).get("_cases") or external_base
        for name in order:
            r = rows[name]
            r["status"] = status_text(r)
            if r.get("_cases") and base:
                r["delta_dice_whole_vs_default"] = paired_delta(r["_cases"], base)
        n_val = next((rows[n]["summary"].get("n_cases") for n in order if rows[n].get("summary")), None)
        result["meta"]["n_val_cases"] = n_val
        result["meta"]["elapsed_s"] = round(elapsed(), 1)
        result["rows"] = [{k: v for k, v in rows[n].items() if not k.startswith("_")}
                          | {"per_case_dice_whole": {c: round(m["dice_whole"], 5)
                                                     for c, m in rows[n].get("_cases", {}).items() if "dice_whole" in m}}
                          for n in order]
        _write_json(args.out_dir / f"{args.out_name}.json", result)
        write_text(args.out_dir / f"{args.out_name}.md", markdown(result), overwrite=True)

    external_base = {}
    if args.base_json and "default" not in args.variants:
        per_case = json.loads(args.base_json.read_text()).get("per_case_dice_whole", {})
        external_base = {case: {"dice_whole": v} for case, v in per_case.items()}
        result["meta"]["delta_base"] = f"per_case_dice_whole of {args.base_json} (CPU-trained, not this run)"

    train_queue = list(args.variants)
    if "default" in train_queue:  # the inference variants wait on it: start it first
        train_queue.remove("default")
        train_queue.insert(0, "default")
    for name in train_queue:
        add_row(name, {"variant": name, "kind": "train", "about": TRAIN_VARIANTS[name]["about"],
                       "train_status": "queued", "eval_status": "waiting for training"})
    if "default" in train_queue and not args.no_inference_variants:
        for name, v in INFERENCE_VARIANTS.items():
            add_row(name, {"variant": name, "kind": "inference", "about": v["about"], "trained": "default",
                           "eval_status": "waiting for default"})
    flush()

    eval_queue: list[Job] = []
    running_train: list[Job] = []
    running_eval: list[Job] = []

    def dependants(name: str) -> list[str]:
        return [name] + ([n for n in INFERENCE_VARIANTS if n in rows] if name == "default" else [])

    def finish_train(job: Job) -> None:
        rc = job.poll()
        hist = read_history(job.workdir)
        status = "ok" if rc == 0 else ("killed at deadline" if job.killed else f"failed (rc {rc})")
        if rc == 0 and hist.get("epochs_done", 0) < job.row["epochs_planned"]:
            status = "stopped early by time budget"
        row = add_row(job.name, {**job.row, **hist, "train_wall_s": round(job.end - job.start, 1),
                                 "train_command": shown_command(job.command), "train_status": status})
        if rc != 0 and not job.killed:
            row["log_tail"] = job.log_tail()
        print(f"[{elapsed():6.1f}s] train {job.name}: {status}, {hist.get('epochs_done', 0)} epochs, "
              f"{row['train_wall_s']} s wall, best val Dice {hist.get('best_val_whole_dice')}", flush=True)
        if rc != 0 and not job.killed:
            print(row["log_tail"], flush=True)
        if (job.workdir / "model.pt").is_file():  # the best checkpoint so far: evaluated even after a kill
            evals = [(job.name, {}, TRAIN_VARIANTS[job.name]["about"])]
            if job.name == "default" and not args.no_inference_variants:
                evals += [(n, v["set"], v["about"]) for n, v in INFERENCE_VARIANTS.items()]
            for name, eval_set, about in evals:
                eval_queue.append(make_eval_job(name, job.name, eval_set, about, args, runs, notb))
                rows[name]["eval_status"] = "queued"
        else:
            for name in dependants(job.name):
                rows[name]["eval_status"] = "no checkpoint"
        flush()

    def finish_eval(job: Job) -> None:
        rc = job.poll()
        summary_path = job.workdir / "summary.json"
        row = add_row(job.name, {**job.row, "eval_wall_s": round(job.end - job.start, 1),
                                 "eval_command": shown_command(job.command)})
        if rc == 0 and summary_path.is_file():
            row["summary"] = json.loads(summary_path.read_text())
            row["_cases"] = read_cases(job.workdir)
            row["eval_status"] = "ok"
            if row["kind"] == "inference":
                for k in ("epochs_planned", "epochs_done", "train_elapsed_s"):
                    if k in rows.get("default", {}):
                        row[k] = rows["default"][k]
        else:
            row["eval_status"] = "killed at deadline" if job.killed else f"failed (rc {rc})"
            if not job.killed:
                row["eval_log_tail"] = job.log_tail()
                print(row["eval_log_tail"], flush=True)
        s = row.get("summary", {})
        print(f"[{elapsed():6.1f}s] eval {job.name}: {row['eval_status']}, Dice whole "
              f"{_fmt(s.get('dice_whole', {}).get('mean'), 4)}, HD95 {_fmt(s.get('hd95_whole_mm', {}).get('mean'), 2)}",
              flush=True)
        flush()

    def on_signal(signum, frame):  # the lease's timeout: end our runs (own sessions), keep what finished
        print(f"[{elapsed():6.1f}s] signal {signum}: killing running jobs", flush=True)
        for job in running_train + running_eval:
            job.kill()
            rows[job.name]["train_status" if job.kind == "train" else "eval_status"] = f"killed by signal {signum}"
        result["notes"].append(f"interrupted by signal {signum} after {elapsed():.0f} s")
        flush()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    while train_queue or eval_queue or running_train or running_eval:
        now = elapsed()
        # start training jobs
        while train_queue and len(running_train) < args.parallel:
            name = train_queue.pop(0)
            if now > train_start_by:
                rows[name]["train_status"] = "skipped (time budget)"
                for n in dependants(name):
                    rows[n]["eval_status"] = "skipped (no training)"
                print(f"[{now:6.1f}s] skip {name}: not started by {train_start_by:.0f} s", flush=True)
                flush()
                continue
            job = make_train_job(name, args, runs, notb, max_minutes=(train_stop_by - now) / 60)
            rows[name]["train_status"] = "running"
            job.launch(env)
            running_train.append(job)
            print(f"[{now:6.1f}s] start train {name}", flush=True)
        # start evaluation jobs
        while eval_queue and len(running_eval) < args.eval_parallel:
            job = eval_queue.pop(0)
            if now > eval_start_by:
                rows[job.name]["eval_status"] = "skipped (time budget)"
                print(f"[{now:6.1f}s] skip eval {job.name}", flush=True)
                flush()
                continue
            rows[job.name]["eval_status"] = "running"
            job.launch(env)
            running_eval.append(job)
            print(f"[{now:6.1f}s] start eval {job.name}", flush=True)
        # reap / kill
        for job in list(running_train):
            if job.poll() is None and now > train_kill_at:
                print(f"[{now:6.1f}s] kill train {job.name} (deadline)", flush=True)
                job.kill()
            if job.poll() is not None:
                running_train.remove(job)
                finish_train(job)
        for job in list(running_eval):
            if job.poll() is None and now > budget:
                print(f"[{now:6.1f}s] kill eval {job.name} (deadline)", flush=True)
                job.kill()
            if job.poll() is not None:
                running_eval.remove(job)
                finish_eval(job)
        if now > budget + 30:  # nothing should be left; never hang
            break
        time.sleep(0.5)

    result["notes"].append(f"total {elapsed():.0f} s; training parallel {args.parallel}, evaluation parallel "
                           f"{args.eval_parallel}; 'train s' is the trainer's own clock (history.json: training + "
                           "per-epoch validation), not counting process start and slice cutting")
    flush()
    print((args.out_dir / f"{args.out_name}.md").read_text(), flush=True)
    done = all(r.get("eval_status") == "ok" and r.get("train_status", "ok") == "ok" for r in rows.values())
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
