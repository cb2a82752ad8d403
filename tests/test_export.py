"""``python -m hipposeg.export``: the ONNX files of the networks ``load_segmenter`` loads, named as the runtimes look
them up (the export itself is pinned against PyTorch in tests/test_runtime.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import BUNDLE


def test_export_makes_the_files_the_runtimes_look_up_for_the_model_load_segmenter_loads(tmp_path, monkeypatch):
    from hipposeg import runtime
    from hipposeg.export import export_model

    monkeypatch.setenv("HIPPOSEG_CACHE", str(tmp_path))
    exported = []

    def export_onnx(network, out, *, spatial_dims):  # stands in for torch.onnx.export (tens of seconds)
        exported.append(spatial_dims)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(b"onnx")
        return Path(out)

    monkeypatch.setattr(runtime, "export_onnx", export_onnx)
    paths = export_model("ensemble")  # the 2.5D core and its 3D partner
    models = BUNDLE / "models"
    assert paths == [runtime.onnx_path(models / "model.pt", "core"),
                     runtime.onnx_path(models / "model_3d.pt", "partner")]
    assert all(p.is_file() for p in paths) and exported == [2, 3]
    assert export_model() == paths[:1] and exported == [2, 3]  # the default, the core alone; an export is kept
