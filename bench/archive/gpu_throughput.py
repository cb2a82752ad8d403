#!/usr/bin/env python3
"""GPU training-throughput benchmark for the hipposeg slice model.

Measures TRAINING throughput (slices/s) of the hipposeg architecture,
``segmentation_models_pytorch.Unet(encoder_name="efficientnet-b0",
encoder_weights=None, in_channels=3, classes=3)``: one iteration is
forward + (soft Dice + cross-entropy) loss + backward + Adam step on a
synthetic batch that already lives on the GPU (no data loading is timed).

Two slice sizes (64x64 and 256x256, the ADNI slice size), each in four
settings:

* ``fp32``            - fp32 weights/activations (PyTorch defaults: cuDNN may
                        use TF32 for convolutions, matmul TF32 off)
* ``amp``             - ``torch.autocast`` mixed precision, bf16 by default
                        (no GradScaler needed; fp16 + GradScaler with
                        ``--amp-dtype fp16``)
* ``channels_last``   - fp32, model and input in ``torch.channels_last``
* ``amp+channels_last``

For each: ``--warmup`` untimed iterations, then ``--iters`` timed iterations,
each bracketed by ``torch.cuda.synchronize()``; the median per-iteration
slices/s and the peak GPU memory (``torch.cuda.max_memory_allocated``) are
reported.  Results go to ``--out`` as JSON and a Markdown table is printed.

Without a CUDA device the script prints a message and exits 0 without writing
anything.  ``--dry-run-cpu`` exercises the same code path on the CPU (batch 4,
1 warm-up + 1 timed iteration, 64x64) and writes only if ``--out`` is given.

Usage::

    python bench/archive/gpu_throughput.py                      # GPU, default settings
    python bench/archive/gpu_throughput.py --out /tmp/t.json    # other output path
    python bench/archive/gpu_throughput.py --dry-run-cpu        # CPU smoke test
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "gpu_throughput.json"
SETTINGS = ("fp32", "amp", "channels_last", "amp+channels_last")
NUM_CLASSES = 3


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help=f"JSON output path (default on GPU: {DEFAULT_OUT}; "
                        "with --dry-run-cpu nothing is written unless given)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256],
                   help="square slice sizes (default: 64 256)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--amp-dtype", choices=("bf16", "fp16"), default="bf16",
                   help="autocast dtype for the amp settings (fp16 uses GradScaler)")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="leave torch.backends.cudnn.benchmark off (default: on)")
    p.add_argument("--time-budget", type=float, default=240.0,
                   help="seconds; configurations not started by then are skipped")
    p.add_argument("--dry-run-cpu", action="store_true",
                   help="CPU smoke test: batch 4, 1 warm-up + 1 timed iteration, 64x64")
    return p.parse_args(argv)


def _dice_ce_loss(logits, target, smp):
    """Soft multiclass Dice (smp) + cross-entropy, computed in fp32."""
    import torch.nn.functional as F
    logits = logits.float()
    dice = _dice_ce_loss.dice  # built once
    return dice(logits, target) + F.cross_entropy(logits, target)


def _run_config(torch, smp, device, size, setting, args, amp_dtype):
    """Train the model for warmup+iters steps; return a result dict."""
    channels_last = "channels_last" in setting
    use_amp = setting.startswith("amp")
    mem_fmt = torch.channels_last if channels_last else torch.contiguous_format

    torch.manual_seed(0)
    model = smp.Unet(encoder_name="efficientnet-b0", encoder_weights=None,
                     in_channels=3, classes=NUM_CLASSES).to(device)
    model = model.to(memory_format=mem_fmt)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = None
    if use_amp and amp_dtype is torch.float16 and device.type == "cuda":
        scaler = torch.amp.GradScaler("cuda")

    b = args.batch
    x = torch.randn(b, 3, size, size, device=device).contiguous(memory_format=mem_fmt)
    y = torch.randint(0, NUM_CLASSES, (b, size, size), device=device)

    is_cuda = device.type == "cuda"

    def sync():
        if is_cuda:
            torch.cuda.synchronize()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            logits = model(x)
        loss = _dice_ce_loss(logits, y, smp)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss

    if is_cuda:
        sync()
        torch.cuda.reset_peak_memory_stats(device)
    t_setup = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t_setup

    times = []
    loss = None
    for _ in range(args.iters):
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    last_loss = float(loss.detach()) if loss is not None else float("nan")

    med = statistics.median(times)
    res = {
        "size": size,
        "setting": setting,
        "batch": b,
        "amp": use_amp,
        "amp_dtype": ("bf16" if amp_dtype is torch.bfloat16 else "fp16") if use_amp else None,
        "grad_scaler": scaler is not None,
        "channels_last": channels_last,
        "warmup_iters": args.warmup,
        "timed_iters": args.iters,
        "warmup_s": round(warmup_s, 3),
        "median_iter_ms": round(med * 1e3, 3),
        "min_iter_ms": round(min(times) * 1e3, 3),
        "max_iter_ms": round(max(times) * 1e3, 3),
        "median_slices_per_s": round(b / med, 1),
        "mean_slices_per_s": round(b * len(times) / sum(times), 1),
        "last_loss": round(last_loss, 5),
        "loss_finite": bool(last_loss == last_loss and abs(last_loss) != float("inf")),
    }
    if is_cuda:
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        res["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 3)
    else:
        res["peak_mem_gib"] = None
    del model, opt, x, y, loss
    return res


def _markdown(results, meta):
    lines = [
        f"Device: {meta['device_name']} | torch {meta['torch_version']} | "
        f"smp {meta['smp_version']} | batch {meta['batch']} | "
        f"amp = autocast {meta['amp_dtype']}"
        + (" + GradScaler" if meta["amp_dtype"] == "fp16" else ""),
        "",
        "| size | setting | median slices/s | median ms/iter | speed-up vs fp32 | peak GPU mem (GiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    base = {r["size"]: r.get("median_slices_per_s") for r in results
            if r["setting"] == "fp32" and "error" not in r}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['size']}x{r['size']} | {r['setting']} | "
                         f"failed: {r['error'][:60]} | | | |")
            continue
        sp = r["median_slices_per_s"]
        b = base.get(r["size"])
        rel = f"{sp / b:.2f}x" if b else "-"
        mem = f"{r['peak_mem_gib']:.2f}" if r.get("peak_mem_gib") is not None else "-"
        lines.append(f"| {r['size']}x{r['size']} | {r['setting']} | {sp:,.0f} | "
                     f"{r['median_iter_ms']:.1f} | {rel} | {mem} |")
    return "\n".join(lines)


def _write(out, payload):
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, out)


def main(argv=None) -> int:
    args = _parse_args(argv)
    import torch

    if args.dry_run_cpu:
        device = torch.device("cpu")
        args.batch, args.warmup, args.iters = 4, 1, 1
        args.sizes = [64]
        torch.set_num_threads(1)
        out = args.out
    else:
        if not torch.cuda.is_available():
            print("gpu_throughput: no CUDA device available; nothing measured, "
                  "nothing written (use --dry-run-cpu for a CPU smoke test).")
            return 0
        device = torch.device("cuda", 0)
        out = args.out or DEFAULT_OUT
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark

    import segmentation_models_pytorch as smp
    _dice_ce_loss.dice = smp.losses.DiceLoss(mode="multiclass", from_logits=True)
    amp_dtype = torch.bfloat16 if args.amp_dtype == "bf16" else torch.float16

    meta = {
        "benchmark": "hipposeg training throughput (fwd + Dice/CE + bwd + Adam)",
        "model": "smp.Unet(encoder_name='efficientnet-b0', encoder_weights=None, in_channels=3, classes=3)",
        "loss": "smp.losses.DiceLoss(multiclass, from_logits) + cross_entropy, in fp32",
        "optimizer": "Adam(lr=1e-3), zero_grad(set_to_none=True)",
        "data": "synthetic randn input / randint labels, resident on device",
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else f"CPU ({platform.processor() or platform.machine()})"),
        "cuda_capability": (".".join(map(str, torch.cuda.get_device_capability(device)))
                            if device.type == "cuda" else None),
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "smp_version": smp.__version__,
        "timm_version": __import__("timm").__version__,
        "python": platform.python_version(),
        "batch": args.batch,
        "sizes": args.sizes,
        "warmup_iters": args.warmup,
        "timed_iters": args.iters,
        "amp_dtype": args.amp_dtype,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "dry_run_cpu": bool(args.dry_run_cpu),
        "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"gpu_throughput: {meta['device_name']}, torch {meta['torch_version']}, "
          f"smp {meta['smp_version']}, batch {args.batch}, sizes {args.sizes}", flush=True)

    results = []
    t_start = time.perf_counter()
    for size in args.sizes:
        for setting in args.settings:
            elapsed = time.perf_counter() - t_start
            if elapsed > args.time_budget:
                results.append({"size": size, "setting": setting,
                                "error": f"skipped: time budget {args.time_budget}s spent"})
                continue
            try:
                r = _run_config(torch, smp, device, size, setting, args, amp_dtype)
            except Exception as exc:  # OOM or other failure: record, go on
                r = {"size": size, "setting": setting,
                     "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
            results.append(r)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            msg = (f"  {size}x{size} {setting:<18} "
                   + (f"{r['median_slices_per_s']:>10,.1f} slices/s  "
                      f"{r['median_iter_ms']:8.2f} ms/iter  peak "
                      f"{r['peak_mem_gib'] if r['peak_mem_gib'] is not None else '-'} GiB"
                      if "error" not in r else r["error"]))
            print(msg, flush=True)
            if out is not None:  # partial results survive a timeout
                _write(out, {**meta, "complete": False, "results": results})

    meta["total_s"] = round(time.perf_counter() - t_start, 1)
    table = _markdown(results, meta)
    print()
    print(table)
    if out is not None:
        _write(out, {**meta, "complete": True, "results": results, "markdown": table})
        print(f"\nwrote {out}")
    return 1 if any("error" in r and not r["error"].startswith("skipped") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
