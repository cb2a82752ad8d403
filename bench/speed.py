"""Speed benchmark of ``hipposeg segment`` on CPU, model loaded once.

    python bench/speed.py [--n 60] [--threads 2] [--tta] [--checkpoint MODEL.pt] [--out JSON]

For each of N Task04 volumes it times the end-to-end path of ``segment`` without the QC picture — read,
check, preprocess, predict (every slicing direction of the default inference), invert, write the mask, make
the CSV row — and, separately, the bare network forward passes over exactly the same slice batches. It reports
medians, their ratio, the time per slicing direction, the machine, and writes ``bench/results/speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from repo_paths import shown  # bench/ is the script's folder

BENCH = Path(__file__).resolve().parent


def bare_forward_seconds(segmenter, image) -> float:
    """Seconds of the network forward passes alone, on the slice batches the inferer builds for ``image``."""
    from hipposeg.inference import _pad_to_multiple

    inferer = getattr(segmenter.inferer, "slice_inferer", segmenter.inferer)  # the 2.5D core's slice inferer
    core = getattr(segmenter.network, "core", segmenter.network)
    partner = getattr(segmenter.network, "partner", None)  # the 3D partner network, when the model has one
    from monai.data import MetaTensor

    tensor = MetaTensor(torch.as_tensor(image.array.astype(np.float32)), affine=torch.as_tensor(image.affine))
    volume = segmenter.preprocessing({"image": tensor})["image"].as_tensor()[0]
    batches = []
    volumes = [volume, volume.flip(0)] if inferer.flip_tta else [volume]
    for vol in volumes:
        for axis in inferer.axes:
            v = vol.movedim(axis, 0)
            n, half = v.shape[0], inferer.context // 2
            idx = (torch.arange(n)[:, None] + torch.arange(-half, half + 1)).clamp_(0, n - 1)
            stacks, _ = _pad_to_multiple(v[idx], inferer.divisor)
            batches += [stacks[i:i + inferer.batch_size].contiguous() for i in range(0, n, inferer.batch_size)]
    with torch.inference_mode():
        start = time.perf_counter()
        for batch in batches:
            core(batch)
        if partner is not None:
            segmenter.inferer.volume_inferer(volume[None, None], partner)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="number of volumes (Task04 imagesTr, sorted)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--checkpoint", default=None, help="a .pt file, run alone (default: the shipped default, "
                        "models/model.pt + models/model_3d.pt)")
    parser.add_argument("--partner", default=None, help="a 3D partner checkpoint to average with (hipposeg.ensemble)")
    parser.add_argument("--out", default=str(BENCH / "results" / "speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from hipposeg.data.manifest import load_manifest
    from hipposeg.data.readers import check_volume, read_image
    from hipposeg.data.writers import write_nifti
    from hipposeg.volumes import reference_volume_ranges, volume_row
    from hipposeg.segment import CROP_LABELS
    from hipposeg.segmenter import load_segmenter

    segmenter = load_segmenter(checkpoint=args.checkpoint, flip_tta=args.tta,
                               overrides={"partner_ckpt_path": args.partner} if args.partner else None)
    paths = [d["image"] for d in load_manifest().datalist("msd_hippocampus", "all")][: args.n]
    ranges = reference_volume_ranges()
    warm = read_image(paths[0])
    for _ in range(3):  # warm-up: first passes allocate and pick kernels
        segmenter.segment(warm)
        bare_forward_seconds(segmenter, warm)
    end_to_end, bare, stages = [], [], {"read": [], "preprocess": [], "predict": [], "postprocess": [], "write": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(paths):
            t0 = time.perf_counter()
            image = check_volume(read_image(path))
            t1 = time.perf_counter()
            result = segmenter.segment(image)
            t2 = time.perf_counter()
            write_nifti(Path(tmp) / f"case{i}_seg.nii.gz", result.labels, image.affine)
            volume_row(f"case{i}", path, result.labels, image.affine, CROP_LABELS, ranges)
            t3 = time.perf_counter()
            end_to_end.append(t3 - t0)
            stages["read"].append(t1 - t0)
            stages["write"].append(t3 - t2)
            for key in ("preprocess", "predict", "postprocess"):
                stages[key].append(result.seconds[key])
            bare.append(bare_forward_seconds(segmenter, image))
    slices = getattr(segmenter.inferer, "slice_inferer", segmenter.inferer)
    n_dirs = len(slices.axes) * (2 if slices.flip_tta else 1)
    med_e2e, med_bare = statistics.median(end_to_end), statistics.median(bare)
    result = {
        "command": "python bench/speed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__, "checkpoint": args.checkpoint or "bundles/hipposeg/models/model.pt",
        "partner": shown(segmenter.partner_checkpoint) if segmenter.partner_checkpoint else None,
        "input_scale": float(getattr(getattr(segmenter.network, "core", segmenter.network), "input_scale", 1.0)),
        "n_volumes": len(paths), "tta": args.tta,
        "slicing_directions": list(slices.axes), "passes_per_volume": n_dirs,
        "median_end_to_end_s": med_e2e, "median_bare_forward_s": med_bare, "ratio": med_e2e / med_bare,
        "median_end_to_end_per_direction_s": med_e2e / n_dirs,
        "median_stage_s": {k: statistics.median(v) for k, v in stages.items()},
    }
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
