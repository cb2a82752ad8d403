"""The network: an smp U-Net with an EfficientNet-B0 encoder, built from a bundle config.

Nothing is ever downloaded: ``encoder_weights`` is None unless a local weights file is given.

EfficientNet's stem convolution has stride 2, so the finest skip connection of smp's U-Net decoder is at half
the input resolution (2 mm on Task04 crops) and the last decoder block only upsamples. ``full_res_skip=True``
adds one light skip connection at the input's own resolution (:class:`FullResolutionUnet`); ``input_scale > 1``
runs the whole network on upsampled slices instead (:class:`ScaledInputNet`), so that its finest features are at
``2 / input_scale`` mm, at a price measured by ``bench/archive/input_scale_cost.py``.
"""

from __future__ import annotations

import functools
import re

from pathlib import Path

import torch
from torch import nn

from hipposeg.errors import InputError


def build_network(
    in_channels: int = 3,
    num_classes: int = 3,
    encoder_name: str = "efficientnet-b0",
    encoder_weights_path: str | None = None,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    full_res_skip: bool = False,
    full_res_channels: int = 16,
    input_scale: float = 1.0,
    channels_last: bool = True,
) -> nn.Module:
    """``segmentation_models_pytorch.Unet`` with ``in_channels`` input slices and ``num_classes`` outputs.

    ``channels_last``: the weights are stored channels-last, so that oneDNN runs the convolutions in NHWC on CPU
    (inputs may stay in the usual layout): on 2 CPU cores a training step is 1.4-1.5x and a crop 1.2-1.5x
    faster (``bench/README.md``). Numerics change only by float rounding; checkpoints are the same.

    ``encoder_weights_path``: a local ``.pth`` state dict for the encoder (e.g. ImageNet weights a user already
    has). For ``in_channels != 3`` the first convolution of a 3-channel checkpoint is adapted by smp's rule.
    """
    import segmentation_models_pytorch as smp

    net = smp.Unet(encoder_name=encoder_name, encoder_weights=None, in_channels=in_channels,
                   classes=num_classes, decoder_channels=tuple(decoder_channels))
    if encoder_weights_path:
        path = Path(encoder_weights_path)
        if not path.is_file():
            raise InputError(path, "encoder weights file not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        first = net.encoder.state_dict()
        for key, value in state.items():  # adapt the stem to in_channels by averaging/repeating
            if key in first and value.ndim == 4 and value.shape[1] != first[key].shape[1]:
                mean = value.mean(dim=1, keepdim=True)
                state[key] = mean.repeat(1, first[key].shape[1], 1, 1) * (3 / first[key].shape[1])
        missing, unexpected = net.encoder.load_state_dict(state, strict=False)
        if len(missing) > len(first) // 2:
            raise InputError(path, f"does not match encoder {encoder_name} ({len(missing)} tensors missing)")
    if full_res_skip:
        net = FullResolutionUnet(net, in_channels, full_res_channels)
    if input_scale != 1.0:
        net = ScaledInputNet(net, input_scale)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def build_network_3d(
    in_channels: int = 1,
    num_classes: int = 3,
    channels: tuple[int, ...] = (32, 64, 128, 256, 320),
    num_res_units: int = 2,
    norm: str = "batch",
) -> nn.Module:
    """The 3D partner network: MONAI's residual ``UNet`` (stride-2 convolutions at every level) on whole crops
    padded to a multiple of 16. The default (five levels 32-320, batch norm): on 2 CPU cores a training step of 4
    crops of 48x64x48 takes 0.45 s and a crop's inference 0.07 s; MONAI's ``DynUNet`` in nnU-Net's layout (a
    full-resolution level) took 5-20x longer for both, which the CPU training and the 0.6 s crop budget cannot
    afford. :func:`partner_architecture` reads ``channels``, ``num_res_units`` and ``norm`` back from a checkpoint."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, channels=tuple(channels),
                strides=(2,) * (len(channels) - 1), num_res_units=num_res_units, norm=norm)


_DOWN_CONV = re.compile(r"^model\.((?:1\.submodule\.)*)(?:0\.)?conv\.unit0\.conv\.weight$")


def partner_architecture(checkpoint: str | Path) -> dict:
    """The :func:`build_network_3d` arguments a partner checkpoint implies (``channels`` per level, ``norm``,
    ``num_res_units``), read from its tensor names and shapes; empty when the file does not exist, so that loading
    the weights reports it."""
    if not Path(checkpoint).is_file():
        return {}
    state = _read_state(Path(checkpoint))
    levels = {}
    for key, value in state.items():
        match = _DOWN_CONV.match(key)
        if match:
            levels[match.group(1).count("submodule")] = int(value.shape[0])
    if not levels or sorted(levels) != list(range(len(levels))):
        return {}  # not a MONAI UNet: load_weights says why it does not fit
    units = sum(1 for key in state if re.match(r"^model\.0\.conv\.unit\d+\.conv\.weight$", key))
    return {"channels": [levels[i] for i in sorted(levels)], "num_res_units": units,
            "norm": "batch" if any(key.endswith("running_mean") for key in state) else "instance"}


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class FullResolutionUnet(nn.Module):
    """An smp U-Net plus a skip connection at full input resolution.

    Two 3x3 convolutions on the input slices (``channels`` maps) are concatenated with the decoder's last
    (full-resolution, upsampled) feature maps and fused by a 1x1 convolution before smp's segmentation head (itself
    a 3x3 convolution). Encoder, decoder and head are the wrapped ``smp.Unet``'s own (``self.unet``). It adds
    about 7% to the forward pass's FLOPs.
    """

    def __init__(self, unet: nn.Module, in_channels: int, channels: int = 16):
        super().__init__()
        self.unet = unet
        decoded = unet.segmentation_head[0].in_channels
        self.stem = nn.Sequential(_conv_bn_relu(in_channels, channels), _conv_bn_relu(channels, channels))
        self.fuse = _conv_bn_relu(decoded + channels, decoded, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        decoded = self.unet.decoder(self.unet.encoder(x))
        return self.unet.segmentation_head(self.fuse(torch.cat([decoded, self.stem(x)], dim=1)))


class ScaledInputNet(nn.Module):
    """Runs ``net`` on slices upsampled by ``scale`` and returns logits at the input's own size.

    The slices are resized bilinearly by exactly ``scale`` (both sides alike), padded at the far edges (edge values
    replicated) to a multiple of 32 for the U-Net, and the logits are cropped and resized back with antialiasing.
    The scale is a float32 buffer (``input_scale``), so a checkpoint says which network it belongs to
    (:func:`architecture_overrides`).
    """

    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"input_scale must be positive, got {scale}")
        self.net = net
        self.register_buffer("input_scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        scale = float(self.input_scale)
        scaled_h, scaled_w = int(round(height * scale)), int(round(width * scale))
        y = nn.functional.interpolate(x, size=[scaled_h, scaled_w], mode="bilinear", align_corners=False)
        y = nn.functional.pad(y, [0, (32 - scaled_w % 32) % 32, 0, (32 - scaled_h % 32) % 32], mode="replicate")
        y = self.net(y)[..., :scaled_h, :scaled_w].float()  # (antialiased resizing has no bfloat16 kernel)
        return nn.functional.interpolate(y, size=[height, width], mode="bilinear", align_corners=False,
                                         antialias=True)


def _read_state(path: Path, map_location="cpu") -> dict:
    """The state dict inside a checkpoint file; a missing or unreadable file is an :class:`InputError`.

    Read from disk once per process and file version: the bundle asks twice (the architecture it implies, then the
    weights), and a cohort run builds its networks once. Callers must not modify the returned tensors."""
    if not path.is_file():
        raise InputError(path, "model checkpoint not found")
    stat = path.stat()
    return _read_state_cached(path.resolve(), stat.st_mtime_ns, stat.st_size, str(map_location))


@functools.lru_cache(maxsize=4)
def _read_state_cached(path: Path, mtime_ns: int, size: int, map_location: str) -> dict:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputError(path, f"cannot read model checkpoint ({type(exc).__name__})") from None
    for key in ("network", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(path, "not a model checkpoint (no state dict inside)")
    return state


def has_full_res_skip(checkpoint: str | Path) -> bool:
    """Whether a checkpoint holds a :class:`FullResolutionUnet` (``build_network(full_res_skip=True)``)."""
    return any(key.startswith(("stem.", "net.stem.")) for key in _read_state(Path(checkpoint)))


def architecture_overrides(checkpoint: str | Path) -> dict:
    """The bundle overrides a checkpoint implies for ``network_def`` (``{"full_res_skip": ..., "input_scale":
    ...}``); empty when the file does not exist, so that loading the weights reports it."""
    if not Path(checkpoint).is_file():
        return {}
    state = _read_state(Path(checkpoint))
    scale = state.get("input_scale")  # a half-precision copy holds 1.3 as 1.2998: 3 decimals give it back
    return {"full_res_skip": any(key.startswith(("stem.", "net.stem.")) for key in state),
            "input_scale": round(float(scale), 3) if scale is not None else 1.0}


def load_weights(network: nn.Module, checkpoint: str | Path, map_location="cpu") -> nn.Module:
    """Load a bundle checkpoint (a bare state dict, or a dict holding ``network``/``state_dict``)."""
    path = Path(checkpoint)
    state = _read_state(path, map_location)
    state = {k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(path, f"checkpoint does not fit the network ({str(exc).splitlines()[0]})") from None
    return network


def save_half_precision(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the network weights of ``checkpoint`` in half precision to ``out`` (how the shipped
    ``models/model.pt`` is made: half the size; :func:`load_weights` turns them back into float32). The
    ``input_scale`` buffer stays float32. Atomic, and ``out`` is replaced only with ``overwrite``."""
    from hipposeg.data.writers import atomic_path

    state = _read_state(Path(checkpoint))
    half = {k: v.half() if torch.is_floating_point(v) and not k.endswith("input_scale") else v
            for k, v in state.items()}
    with atomic_path(out, overwrite) as tmp:
        torch.save(half, tmp)
    return Path(out)

