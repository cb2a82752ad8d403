"""What upsampling the slices costs on CPU: one training step and one slicing direction at 1x, 1.5x, 2x, with
the weights in the usual layout and channels-last (the bundle's default since 0.3.1).

    python bench/archive/input_scale_cost.py    # writes bench/archive/input_scale_cost.json (a frozen one-off)

EfficientNet's stem has stride 2, so on 1 mm Task04 crops the encoder's finest features are at 2 mm. Feeding
slices upsampled by 1.5x or 2x is the usual remedy for small structures; this measures its price with the
bundle's network (random weights and inputs: the cost does not depend on them): a training step at the bundle's
batch of 32 slices (forward, cross-entropy, backward, AdamW; the loss's own share is negligible), and inference of one slicing direction of a
typical crop (45 slices, 64x64 after padding, scaled with the input). Costs are relative to 1x in the usual layout.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hipposeg.model import build_network  # noqa: E402

OUT = Path(__file__).parent / "input_scale_cost.json"
PADDED = 64  # the bundle pads each crop slice to 64x64 for the encoder
SLICES_PER_DIRECTION = 45
BATCH = 32


def _median_seconds(step, repeats: int) -> float:
    for _ in range(3):  # warm-up (allocator, one-off kernels)
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> dict:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    rows = []
    for scale, channels_last in [(s, cl) for s in (1.0, 1.5, 2.0) for cl in (False, True)]:
        size = int(round(PADDED * scale))
        net = build_network(in_channels=3, num_classes=3, channels_last=channels_last)
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        x, y = torch.randn(BATCH, 3, size, size), torch.randint(0, 3, (BATCH, size, size))

        def train_step():
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        net.train()
        train_s = _median_seconds(train_step, 10)
        net.eval()
        slices = torch.randn(SLICES_PER_DIRECTION, 3, size, size)
        with torch.no_grad():
            infer_s = _median_seconds(lambda: net(slices), 10)
        rows.append({"input_scale": scale, "channels_last": channels_last, "slice_px": size,
                     "train_step_s": round(train_s, 3),
                     "inference_per_direction_s": round(infer_s, 3)})
        print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        r["train_cost_vs_1x"] = round(r["train_step_s"] / base["train_step_s"], 2)
        r["inference_cost_vs_1x"] = round(r["inference_per_direction_s"] / base["inference_per_direction_s"], 2)
    result = {"command": "python bench/archive/input_scale_cost.py", "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "batch": BATCH, "slices_per_direction": SLICES_PER_DIRECTION, "rows": rows}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
