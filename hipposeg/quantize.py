"""An int8 copy of the 2.5D core for OpenVINO: made once by post-training quantization (NNCF), shipped in the bundle.

    python -m hipposeg.quantize [--model NAME|CHECKPOINT] [--calibration-crops 20] [--overwrite]

needs ``pip install openvino nncf`` and the Task04 training crops (``--data-root`` as at every door). The core's
input batches of ``--calibration-crops`` training crops (folds 1-4, every 8th case: never a fold-0 crop, on which
``bench/int8_core.py`` scores the result) are recorded while the float32 core segments them, and serve as NNCF's
calibration set (``nncf.quantize``, MIXED preset: symmetric weights, asymmetric activations). Written beside the
checkpoint, atomically: ``<stem>_int8.xml`` / ``.bin`` (OpenVINO IR) and ``<stem>_int8.json``, which names the
checkpoint and its sha256.

At run time (:func:`hipposeg.runtime.accelerate`) OpenVINO runs the core from this file when it exists beside the
checkpoint *and* was made from exactly that checkpoint (the sha256 matches; a retrained ``model.pt`` without a new
quantization runs in float32), unless int8 is switched off (``hipposeg segment --no-int8``, ``inference.json``'s
``int8``). ONNX Runtime and PyTorch always run float32. Measured in ``bench/results/int8_core.json`` (``python
bench/int8_core.py``): fold-0 Dice of the default against the float32 core, mask agreement, speed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

SUFFIX = "_int8"


def int8_paths(checkpoint: str | Path) -> tuple[Path, Path]:
    """(``<stem>_int8.xml``, ``<stem>_int8.json``) beside ``checkpoint``; the weights are the ``.bin`` beside the
    ``.xml``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}{SUFFIX}.xml"), path.with_name(f"{path.stem}{SUFFIX}.json")


def shipped_int8(checkpoint: str | Path) -> Path | None:
    """The int8 network (``.xml``) made from exactly ``checkpoint``, or None (none beside it, an unreadable record, or
    one made from another version of the file)."""
    from hipposeg.cache import cached_sha256

    xml, record = int8_paths(checkpoint)
    if not (xml.is_file() and xml.with_suffix(".bin").is_file() and record.is_file()):
        return None
    try:
        made_from = json.loads(record.read_text()).get("source_sha256")
    except (OSError, ValueError):
        return None
    return xml if made_from == cached_sha256(checkpoint) else None


def calibration_batches(segmenter, images) -> list:
    """The core's input batches (numpy, float32) while ``segmenter`` (run by OpenVINO) segments ``images``."""
    from hipposeg.runtime import ExportedNetwork

    core = next(m for m in segmenter.network.modules() if isinstance(m, ExportedNetwork))
    run, batches = core._run, []

    def recording(x):
        batches.append(x.copy())
        return run(x)

    core._run = recording
    try:
        for image in images:
            segmenter.segment(image, with_confidence=False)
    finally:
        core._run = run
    return batches


def quantize_core(model: str | Path | None = None, *, calibration_crops: int = 20, data_root: str | None = None,
                  out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Quantize ``model``'s core (``--model`` as at every door; default: the bundle's default) and write it (default:
    beside its checkpoint, see the module docstring). Returns the ``.xml`` path."""
    import nncf
    import openvino

    from hipposeg.cache import cached_sha256
    from hipposeg.data.manifest import load_manifest, resolve_data_root
    from hipposeg.data.readers import read_image
    from hipposeg.data.writers import atomic_path
    from hipposeg.errors import InputError
    from hipposeg.runtime import ExportedNetwork
    from hipposeg.segmenter import load_segmenter

    segmenter = load_segmenter(model, runtime="openvino", int8=False)
    xml, record = int8_paths(segmenter.checkpoint)
    if out is not None:
        xml, record = Path(out).with_suffix(".xml"), Path(out).with_suffix(".json")
    if not overwrite and (xml.exists() or record.exists()):
        raise InputError(xml, "exists (pass --overwrite to replace it)")
    train = load_manifest().datalist("msd_hippocampus", "train", 0, data_root=resolve_data_root(data_root))
    items = train[::8][:calibration_crops]
    batches = calibration_batches(segmenter, [read_image(item["image"]) for item in items])
    core = next(m for m in segmenter.network.modules() if isinstance(m, ExportedNetwork))
    quantized = nncf.quantize(openvino.Core().read_model(str(core.path)), nncf.Dataset(batches),
                              subset_size=len(batches), preset=nncf.QuantizationPreset.MIXED)
    xml.parent.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)  # the record validates the pair: none while the pair is replaced
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=xml.parent) as tmp_dir:
        openvino.save_model(quantized, str(Path(tmp_dir) / xml.name), compress_to_fp16=False)
        for suffix in (".bin", ".xml"):
            os.replace(Path(tmp_dir) / xml.with_suffix(suffix).name, xml.with_suffix(suffix))
    with atomic_path(record, overwrite=True) as tmp:
        tmp.write_text(json.dumps({
            "source": Path(segmenter.checkpoint).name, "source_sha256": cached_sha256(segmenter.checkpoint),
            "made_by": "python -m hipposeg.quantize", "date": time.strftime("%Y-%m-%d %H:%M"),
            "nncf": nncf.__version__, "openvino": openvino.__version__, "preset": "MIXED",
            "calibration": {"crops": len(items), "batches": len(batches),
                            "split": "msd_hippocampus train (folds 1-4), every 8th case"},
        }, indent=1) + "\n")
    return xml


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hipposeg.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a shipped model's name, a bundle folder or a checkpoint (default: the "
                                        "bundle's default model)")
    parser.add_argument("--calibration-crops", type=int, default=20)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None, help="the .xml to write (default: <checkpoint stem>_int8.xml beside it)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    xml = quantize_core(args.model, calibration_crops=args.calibration_crops, data_root=args.data_root, out=args.out,
                        overwrite=args.overwrite)
    print(f"{xml} + .bin ({xml.with_suffix('.bin').stat().st_size / 1e6:.1f} MB) + {xml.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
