"""Post-training int8 quantization of the 2.5D core with NNCF (issue 26's optional step): accuracy and speed.

Run: ``python bench/int8_core.py [--calibration-crops 20]`` (needs ``pip install openvino nncf``); writes
``bench/results/int8_core.json``; the int8 network goes to the bench runs folder (``common.RUNS``/``int8_core``), not
into the bundle.

What it does: the shipped default runs with ``--runtime openvino``; the core's input batches of ``N`` training crops
(folds 1-4, every 8th case) are recorded and serve as NNCF's calibration set (``nncf.quantize``, MIXED preset:
symmetric weights, asymmetric activations); every fold-0 crop is then segmented twice, by the float32 core and by the
int8 one (the 3D partner unchanged), and scored against its label (whole-hippocampus Dice, paired difference with its
standard error) and against each other (mask agreement). Speed: one recorded batch of the core through each network,
alternating A B A B, median of the rounds, with the CPU named.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import RUNS, machine, provenance, this_command, write_result

DEFAULT_OUT = Path(__file__).parent / "results" / "int8_core.json"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration-crops", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="A B rounds of the speed comparison")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)

    import nncf
    import openvino

    from hipposeg.data.manifest import load_manifest, resolve_data_root
    from hipposeg.data.readers import read_image
    from hipposeg.metrics import dice
    from hipposeg.runtime import ExportedNetwork
    from hipposeg.segmenter import load_segmenter

    root = resolve_data_root(None)
    manifest = load_manifest()
    train = manifest.datalist("msd_hippocampus", "train", 0, data_root=root)
    val = manifest.datalist("msd_hippocampus", "val", 0, data_root=root)
    segmenter = load_segmenter(runtime="openvino")
    core = next(m for m in segmenter.network.modules() if isinstance(m, ExportedNetwork))
    float_run = core._run

    batches: list[np.ndarray] = []

    def recording(x):
        batches.append(x.copy())
        return float_run(x)

    core._run = recording
    for item in train[::8][:args.calibration_crops]:
        segmenter.segment(read_image(item["image"]), with_confidence=False)
    core._run = float_run

    quantized = nncf.quantize(openvino.Core().read_model(str(core.path)), nncf.Dataset(batches),
                              subset_size=len(batches), preset=nncf.QuantizationPreset.MIXED)
    out_dir = RUNS / "int8_core"
    out_dir.mkdir(parents=True, exist_ok=True)
    openvino.save_model(quantized, str(out_dir / "core_int8.xml"))
    int8_run = ExportedNetwork(out_dir / "core_int8.xml", "openvino")._run  # compiled as the shipped runtime does

    cases = []
    for item in val:
        image, label = read_image(item["image"]), np.asarray(read_image(item["label"]).array)
        masks = {}
        for name, run in (("float32", float_run), ("int8", int8_run)):
            core._run = run
            masks[name] = segmenter.segment(image, with_confidence=False).labels
        core._run = float_run
        cases.append({"case": Path(item["image"]).name, "dice_float32": dice(masks["float32"], label),
                      "dice_int8": dice(masks["int8"], label), "agreement": dice(masks["float32"], masks["int8"])})
    delta = np.array([c["dice_int8"] - c["dice_float32"] for c in cases])

    batch = batches[0]
    timings = {"float32": [], "int8": []}
    for _ in range(args.rounds):
        for name, run in (("float32", float_run), ("int8", int8_run)):
            run(batch)  # warm
            t0 = time.perf_counter()
            run(batch)
            timings[name].append(time.perf_counter() - t0)
    result = {
        "command": this_command(__file__, argv), "date": time.strftime("%Y-%m-%d %H:%M"), **provenance(segmenter),
        "machine": machine(), "nncf": nncf.__version__, "openvino": openvino.__version__,
        "calibration": {"crops": args.calibration_crops, "batches": len(batches), "batch_shape": list(batch.shape),
                        "split": "msd_hippocampus train (folds 1-4), every 8th case"},
        "fold0": {"n": len(cases), "dice_float32": float(np.mean([c["dice_float32"] for c in cases])),
                  "dice_int8": float(np.mean([c["dice_int8"] for c in cases])),
                  "paired_delta": float(delta.mean()), "paired_delta_se": float(delta.std(ddof=1) / np.sqrt(len(delta))),
                  "agreement_mean": float(np.mean([c["agreement"] for c in cases])),
                  "agreement_min": float(np.min([c["agreement"] for c in cases]))},
        "batch_seconds": {name: float(np.median(v)) for name, v in timings.items()},
        "cases": cases,
    }
    result["batch_speed_up"] = result["batch_seconds"]["float32"] / result["batch_seconds"]["int8"]
    write_result(args.out, result)
    print({k: result[k] for k in ("fold0", "batch_seconds", "batch_speed_up")})
    return result


if __name__ == "__main__":
    main()
