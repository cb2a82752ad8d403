"""The core's int8 copy (hipposeg.quantize): shipped for exactly the shipped weights, found wherever the bundle is
copied, ignored for any other checkpoint, and (with OpenVINO installed) close to the float32 core's masks."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

from hipposeg.bundle import find_bundle
from hipposeg.quantize import int8_paths, shipped_int8

MODELS = find_bundle() / "models"


def test_the_shipped_int8_core_was_made_from_the_shipped_weights():
    """A retrained models/model.pt without ``python -m hipposeg.quantize`` after it fails here (OpenVINO would
    silently run the float32 core, and the bench's int8 figures would describe another network)."""
    xml, record = int8_paths(MODELS / "model.pt")
    assert xml == MODELS / "model_int8.xml" and xml.with_suffix(".bin").is_file()
    assert json.loads(record.read_text())["source"] == "model.pt"
    assert shipped_int8(MODELS / "model.pt") == xml


def test_int8_copy_follows_the_bundle_and_only_its_own_checkpoint(tmp_path):
    for name in ("model.pt", "model_int8.xml", "model_int8.bin", "model_int8.json"):
        shutil.copy(MODELS / name, tmp_path / name)
    assert shipped_int8(tmp_path / "model.pt") == tmp_path / "model_int8.xml"  # a copied bundle keeps it
    other = tmp_path / "other.pt"
    shutil.copy(MODELS / "model.pt", other)
    assert shipped_int8(other) is None  # no other_int8.xml beside it
    with open(tmp_path / "model.pt", "ab") as f:  # the same name, other bytes: a retrained model
        f.write(b"\0")
    assert shipped_int8(tmp_path / "model.pt") is None
    (tmp_path / "model_int8.json").write_text("not json")
    assert shipped_int8(tmp_path / "model.pt") is None


def test_int8_only_under_openvino_and_only_for_the_core(tmp_path, monkeypatch):
    """ONNX Runtime, PyTorch and the 3D partner never take the int8 file; ``int8=False`` keeps OpenVINO off it."""
    from hipposeg import runtime
    from hipposeg.model import build_network

    asked = []
    monkeypatch.setattr(runtime, "ExportedNetwork", lambda path, rt: asked.append((path.name, rt)) or path)
    monkeypatch.setattr(runtime, "ensure_onnx", lambda network, checkpoint, part: tmp_path / f"{part}.onnx")
    network, checkpoint = build_network(num_classes=3), MODELS / "model.pt"
    runtime.accelerate(network, checkpoint, part="core", runtime="openvino")
    runtime.accelerate(network, checkpoint, part="core", runtime="openvino", int8=False)
    runtime.accelerate(network, checkpoint, part="core", runtime="onnx")
    runtime.accelerate(network, checkpoint, part="partner", runtime="openvino")
    assert asked == [("model_int8.xml", "openvino"), ("core.onnx", "openvino"), ("core.onnx", "onnx"),
                     ("partner.onnx", "openvino")]
    assert runtime.accelerate(network, checkpoint, part="core", runtime="torch") is network


def test_int8_core_masks_agree_with_float32(msd):
    """Under OpenVINO the default runs the int8 core (``precision`` says so) and ``int8=False`` the float32 one; on
    three crops the masks agree to Dice > 0.99 (bench/int8_core.py: fold-0 agreement and Dice)."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (the int8 core runs only under OpenVINO)")
    from hipposeg.data.readers import read_image
    from hipposeg.metrics import dice
    from hipposeg.segmenter import load_segmenter

    quantized, full = load_segmenter(runtime="openvino"), load_segmenter(runtime="openvino", int8=False)
    assert (quantized.precision, full.precision) == ("int8", "float32")
    for path in sorted((msd / "imagesTr").glob("*.nii.gz"))[:3]:
        image = read_image(path)
        a, b = quantized.segment(image).labels, full.segment(image).labels
        assert dice(a > 0, b > 0) > 0.99
        assert np.array_equal(np.unique(a), np.unique(b))
