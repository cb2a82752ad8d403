"""Export a model's networks to ONNX, into the cache the runtimes read (:mod:`hipposeg.runtime`).

    python -m hipposeg.export [--model NAME|BUNDLE|CHECKPOINT] [--partner CHECKPOINT]

Builds the networks exactly as ``configs/inference.json`` does (PyTorch, weights from the ``.pt`` files), writes
``core-<sha256>.onnx`` (and ``partner-<sha256>.onnx`` for a model with a 3D partner) into
:func:`hipposeg.cache.cache_dir` and prints their paths. ``hipposeg segment`` makes the same files on first use
when OpenVINO or ONNX Runtime is installed; this command makes them ahead (an image build, a read-only home later).
An existing file of the same checkpoint is kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def export_model(model: str | None = None, *, partner: str | None = None) -> list[Path]:
    """The cached ONNX files of ``model``'s networks (``--model`` as at every door), made when missing. The networks
    and their checkpoints are the ones :func:`hipposeg.segmenter.load_segmenter` loads, run by PyTorch."""
    from hipposeg.runtime import ensure_onnx
    from hipposeg.segmenter import load_segmenter

    segmenter = load_segmenter(model, partner=partner, runtime="torch", device="cpu")
    network = segmenter.network
    paths = [ensure_onnx(getattr(network, "core", network), segmenter.checkpoint, "core")]
    if segmenter.partner_checkpoint:
        paths.append(ensure_onnx(network.partner, segmenter.partner_checkpoint, "partner"))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hipposeg.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a shipped model's name, a bundle folder or a checkpoint (default: the "
                                        "bundle's default model)")
    parser.add_argument("--partner", help="with a checkpoint --model: its 3D partner checkpoint")
    args = parser.parse_args(argv)
    for path in export_model(args.model, partner=args.partner):
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
