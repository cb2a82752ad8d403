"""The CPU runtimes (hipposeg.runtime): which one runs, and that the exported networks give PyTorch's answer."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from hipposeg.errors import InputError
from hipposeg.runtime import choose_runtime, runtime_of


def test_auto_takes_torch_when_no_runtime_is_installed(monkeypatch):
    import hipposeg.runtime as runtime

    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: None)
    assert choose_runtime("auto", "cpu") == "torch"
    with pytest.raises(InputError, match="pip install openvino"):
        choose_runtime("openvino", "cpu")
    with pytest.raises(InputError, match="pip install onnxruntime"):
        choose_runtime("onnx", "cpu")


def test_a_gpu_and_an_explicit_torch_run_pytorch():
    assert choose_runtime("openvino", "cuda") == "torch"
    assert choose_runtime("auto", torch.device("cuda:0")) == "torch"
    assert choose_runtime("torch", "cpu") == "torch"
    with pytest.raises(InputError, match="unknown runtime"):
        choose_runtime("tensorrt", "cpu")


def test_auto_follows_the_measured_order(monkeypatch):
    import hipposeg.runtime as runtime

    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: object() if name == "onnxruntime" else None)
    assert choose_runtime("auto", "cpu") == "onnx"


@pytest.fixture(scope="module")
def crops(msd):
    from hipposeg.data.readers import check_volume, read_image

    return [check_volume(read_image(p)) for p in sorted((msd / "imagesTr").glob("*.nii.gz"))[:3]]


@pytest.fixture(scope="module")
def torch_results(crops):
    from hipposeg.segmenter import load_segmenter

    segmenter = load_segmenter("ensemble", runtime="torch")  # both shipped networks: the core and the 3D partner
    assert segmenter.runtime == "torch"
    return [segmenter.segment(image, return_probabilities=True) for image in crops]


@pytest.mark.parametrize("runtime, package", [("onnx", "onnxruntime"), ("openvino", "openvino")])
def test_exported_networks_give_pytorchs_masks(runtime, package, crops, torch_results, tmp_path_factory,
                                              monkeypatch):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    from hipposeg.segmenter import load_segmenter

    cache = tmp_path_factory.getbasetemp() / "hipposeg-cache"  # one export for both runtimes
    monkeypatch.setenv("HIPPOSEG_CACHE", str(cache))
    # the default's core and the opt-in partner, float32 (the int8 core has its own test: tests/test_quantize.py)
    segmenter = load_segmenter("ensemble", runtime=runtime, int8=False)
    assert segmenter.runtime == runtime == runtime_of(segmenter.network)
    assert sorted(p.name.split("-")[0] for p in (cache / "onnx").glob("*.onnx")) == ["core", "partner"]
    for image, expected in zip(crops, torch_results):
        got = segmenter.segment(image, return_probabilities=True)
        assert np.abs(got.probabilities - expected.probabilities).max() < 1e-4
        np.testing.assert_array_equal(got.labels, expected.labels)


def test_auto_falls_back_to_pytorch_when_the_export_cannot_be_written(tmp_path, monkeypatch):
    """A read-only cache folder (e.g. in a container): ``auto`` runs PyTorch with a warning naming the folder; a
    runtime asked for by name fails."""
    from hipposeg import runtime
    from hipposeg.model import build_network

    def cannot_write(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "onnx"))

    monkeypatch.setattr(runtime, "ensure_onnx", cannot_write)
    network = build_network(num_classes=3)
    with pytest.warns(UserWarning, match="running it with PyTorch"):
        assert runtime.accelerate(network, tmp_path / "model.pt", part="core", runtime="onnx",
                                  fallback=True) is network
    with pytest.raises(PermissionError):
        runtime.accelerate(network, tmp_path / "model.pt", part="core", runtime="onnx")
