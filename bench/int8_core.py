"""Int8 core (issue 26's optional step): the bundle's quantized core against the float32 one, accuracy and speed.

Run: ``python bench/int8_core.py`` (needs ``pip install openvino``); writes ``bench/results/int8_core.json``. The int8
network is the one the bundle ships beside ``models/model.pt`` (``models/model_int8.xml``, made by ``python -m
hipposeg.quantize``: NNCF, MIXED preset, calibrated on 20 training crops of folds 1-4) and the one ``hipposeg
segment`` runs under OpenVINO; ``--int8 FILE`` scores another.

Every fold-0 crop is segmented twice through the real engine, with OpenVINO's float32 core (``--no-int8``) and with
the int8 one (the 3D partner, when any, unchanged), and scored against its label (whole-hippocampus Dice, paired
difference with its standard error) and against each other (mask agreement). Speed: one batch of the core's real
inputs (the first calibration-like batch of a training crop) through each network, alternating A B A B, median of the
rounds, with the CPU named.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import RUNS, machine, provenance, this_command, write_result

DEFAULT_OUT = Path(__file__).parent / "results" / "int8_core.json"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--int8", default=None, help="the int8 network's .xml (default: the one shipped for "
                                                     "models/model.pt)")
    parser.add_argument("--rounds", type=int, default=5, help="A B rounds of the speed comparison")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)

    import openvino

    from hipposeg.data.manifest import load_manifest, resolve_data_root
    from hipposeg.data.readers import read_image
    from hipposeg.metrics import dice
    from hipposeg.quantize import calibration_batches, int8_paths, shipped_int8
    from hipposeg.runtime import ExportedNetwork
    from hipposeg.segmenter import load_segmenter

    root = resolve_data_root(None)
    manifest = load_manifest()
    train = manifest.datalist("msd_hippocampus", "train", 0, data_root=root)
    val = manifest.datalist("msd_hippocampus", "val", 0, data_root=root)
    segmenter = load_segmenter(runtime="openvino", int8=False)
    xml = Path(args.int8) if args.int8 else shipped_int8(segmenter.checkpoint)
    if xml is None:
        raise SystemExit(f"no int8 network made from {segmenter.checkpoint}: run python -m hipposeg.quantize")
    core = next(m for m in segmenter.network.modules() if isinstance(m, ExportedNetwork))
    float_run = core._run
    int8_run = ExportedNetwork(xml, "openvino")._run  # compiled as the shipped runtime does
    record = int8_paths(segmenter.checkpoint)[1]
    made = json.loads(record.read_text()) if not args.int8 and record.is_file() else {}

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

    batches = calibration_batches(segmenter, [read_image(train[0]["image"])])
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
        "machine": machine(), "openvino": openvino.__version__, "int8_network": str(xml.name),
        "quantization": made, "batch_shape": list(batch.shape),
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
