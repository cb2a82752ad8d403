"""Which engine runs the networks on a CPU: PyTorch, ONNX Runtime or OpenVINO.

The shipped networks are PyTorch modules. On a CPU the same networks exported to ONNX run faster under OpenVINO or
ONNX Runtime (``bench/README.md``, speed table, one column per runtime, measured by ``bench/speed.py --runtime``);
both are optional extras (``pip install hipposeg[openvino]`` / ``hipposeg[onnx]``). :func:`choose_runtime` decides
once for every door (the bundle's ``network`` calls :func:`accelerate` through :func:`hipposeg.ensemble.load_network`
with ``inference.json``'s ``runtime`` key): ``auto`` takes the first installed runtime of :data:`PREFERENCE`, the
order the speed bench measured; a GPU device always runs PyTorch.

The ONNX files are made from the checkpoint by :func:`export_onnx` (``python -m hipposeg.export``), never
downloaded: once per checkpoint version, into :func:`hipposeg.cache.cache_dir` (``~/.cache/hipposeg``, or
``$HIPPOSEG_CACHE``), named by the checkpoint's sha256 (:func:`hipposeg.cache.cached_sha256`: hashed once, not at
every start-up), written atomically, with batch and spatial sizes dynamic (the slice inferer pads
planes to a multiple of 32, the volume inferer crops to a multiple of 16; both vary with the image).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hipposeg.cache import cache_dir, cached_sha256
from hipposeg.runtime_names import RUNTIMES

#: ``auto``'s order, fastest first, on the CPUs measured (``bench/results/speed_*.json``): OpenVINO ran the default
#: model's networks 1.6-1.9x, ONNX Runtime 1.4-1.7x faster than PyTorch on 2 AVX2 cores
PREFERENCE = ("openvino", "onnx", "torch")
#: the Python package each runtime needs
PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}
#: bumped when the export changes, so cached files of an older export are not reused
EXPORT_VERSION = 1
OPSET = 17


def installed(runtime: str) -> bool:
    """Whether ``runtime``'s package can be imported (without importing it); PyTorch always can."""
    package = PACKAGES.get(runtime)
    return package is None or importlib.util.find_spec(package) is not None


def choose_runtime(requested: str = "auto", device: str | torch.device = "cpu") -> str:
    """The runtime that runs the networks: ``torch`` on any non-CPU device, the requested one when installed
    (an :class:`~hipposeg.errors.InputError` naming the extra when not), and for ``auto`` the first installed one of
    :data:`PREFERENCE`."""
    from hipposeg.errors import InputError

    requested = str(requested or "auto").lower()
    if requested not in RUNTIMES:
        raise InputError(None, f"unknown runtime {requested!r} (expected one of {', '.join(RUNTIMES)})")
    if torch.device(device).type != "cpu" or requested == "torch":
        return "torch"
    if requested == "auto":
        return next(r for r in PREFERENCE if installed(r))
    if not installed(requested):
        raise InputError(None, f"runtime {requested!r} needs the package {PACKAGES[requested]} "
                               f"(pip install {PACKAGES[requested]})")
    return requested


def onnx_path(checkpoint: str | Path, part: str) -> Path:
    """The cached ONNX file of ``part`` (``core``, ``partner``) of ``checkpoint``: named by the checkpoint's
    sha256, so a retrained file under the same name gets a new export."""
    return cache_dir() / "onnx" / f"{part}-{cached_sha256(checkpoint)[:20]}-v{EXPORT_VERSION}.onnx"


def export_onnx(network: nn.Module, out: str | Path, *, spatial_dims: int) -> Path:
    """Write ``network`` (eval mode, CPU, float32) as ONNX to ``out`` atomically, batch and the ``spatial_dims``
    last axes dynamic. Returns ``out``."""
    from hipposeg.data.writers import atomic_path

    channels = _in_channels(network)
    example = torch.zeros((2, channels) + (64,) * spatial_dims)
    axes = {0: "batch", **{2 + i: f"size{i}" for i in range(spatial_dims)}}
    network = network.eval()
    with atomic_path(out, overwrite=True) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(network, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, opset_version=OPSET, dynamo=False)
    return Path(out)


def _in_channels(network: nn.Module) -> int:
    first = next(m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
    return int(first.in_channels)


class ExportedNetwork(nn.Module):
    """An exported network run by ONNX Runtime or OpenVINO behind the PyTorch module interface the inferers use:
    ``forward(float32 tensor on the CPU) -> logits tensor``. It holds no parameters (``.to``/``.eval`` are no-ops)."""

    def __init__(self, path: str | Path, runtime: str, threads: int | None = None):
        super().__init__()
        self.path, self.runtime = Path(path), runtime
        #: ``int8`` for a quantized network (:mod:`hipposeg.quantize`), else ``float32``
        self.precision = "int8" if self.path.suffix == ".xml" and self.path.stem.endswith("_int8") else "float32"
        threads = int(threads or torch.get_num_threads())
        if runtime == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._run = lambda x: session.run(None, {"image": x})[0]
        elif runtime == "openvino":
            import openvino

            core = openvino.Core()
            # CACHE_DIR: OpenVINO keeps the compiled network beside the export; later processes load it instead
            # of compiling again (start-up)
            compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                             "PERFORMANCE_HINT": "LATENCY",
                                                             "CACHE_DIR": str(Path(path).parent / "openvino")})
            request = compiled.create_infer_request()
            self._run = lambda x: request.infer({0: x})[0].copy()  # the request reuses its output buffer
        else:
            raise ValueError(f"ExportedNetwork runs onnx or openvino, not {runtime!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self._run(array))

    def extra_repr(self) -> str:
        return f"runtime={self.runtime}, precision={self.precision}, path={self.path}"


def ensure_onnx(network: nn.Module, checkpoint: str | Path, part: str) -> Path:
    """The cached ONNX file of ``network`` (``part`` of ``checkpoint``: ``core`` or ``partner``), exported now if
    missing. A network that upsamples its slices (:class:`~hipposeg.model.ScaledInputNet`, whose resizing depends on
    the input size) is exported without the resizing (the network inside; :func:`accelerate` keeps the resizing in
    PyTorch)."""
    from hipposeg.model import ScaledInputNet

    if isinstance(network, ScaledInputNet):
        network, part = network.net, f"{part}-inner"
    path = onnx_path(checkpoint, part)
    if not path.is_file():
        export_onnx(network, path, spatial_dims=3 if _is_3d(network) else 2)
    return path


def accelerate(network: nn.Module, checkpoint: str | Path, *, part: str, runtime: str,
               fallback: bool = False, int8: bool = True) -> nn.Module:
    """``network`` (weights of ``checkpoint`` loaded) run by ``runtime`` (``choose_runtime``'s answer): itself for
    ``torch``, else an :class:`ExportedNetwork` of its ONNX export (:func:`ensure_onnx`); under OpenVINO with
    ``int8``, the core's int8 copy shipped beside ``checkpoint`` instead, when one was made from exactly that file
    (:func:`hipposeg.quantize.shipped_int8`). With ``fallback`` (the runtime was chosen by ``auto``), an export or
    runtime that cannot be set up (e.g. a read-only cache folder) leaves the network to PyTorch with a warning
    instead of failing the run; a runtime asked for by name fails."""
    from hipposeg.model import ScaledInputNet
    from hipposeg.quantize import shipped_int8

    if runtime == "torch":
        return network
    quantized = shipped_int8(checkpoint) if (runtime == "openvino" and int8 and part == "core"
                                             and not isinstance(network, ScaledInputNet)) else None
    try:
        exported = ExportedNetwork(quantized or ensure_onnx(network, checkpoint, part), runtime)
    except (OSError, RuntimeError) as exc:
        if not fallback:
            raise
        warnings.warn(f"{runtime} could not run the {part} network ({type(exc).__name__}: {exc}); running it with "
                      f"PyTorch (cache folder {cache_dir()}, set HIPPOSEG_CACHE to a writable one)", stacklevel=2)
        return network
    if isinstance(network, ScaledInputNet):
        network.net = exported
        return network
    return exported


def _is_3d(network: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv3d) for m in network.modules())


def runtime_of(network: nn.Module) -> str:
    """The runtime running ``network`` (as :func:`accelerate` left it): ``onnx``/``openvino`` when an exported
    network is inside, else ``torch``."""
    exported = [m.runtime for m in network.modules() if isinstance(m, ExportedNetwork)]
    return exported[0] if exported else "torch"


def precision_of(network: nn.Module) -> str:
    """``int8`` when a quantized network runs inside ``network`` (:mod:`hipposeg.quantize`), else ``float32``."""
    return "int8" if any(getattr(m, "precision", None) == "int8" for m in network.modules()
                         if isinstance(m, ExportedNetwork)) else "float32"
