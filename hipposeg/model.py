"""The network: an smp U-Net with an EfficientNet-B0 encoder, built from a bundle config.

Nothing is ever downloaded: ``encoder_weights`` is None unless a local weights file is given.
"""

from __future__ import annotations

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
) -> nn.Module:
    """``segmentation_models_pytorch.Unet`` with ``in_channels`` input slices and ``num_classes`` outputs.

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
    return net


def load_weights(network: nn.Module, checkpoint: str | Path, map_location="cpu") -> nn.Module:
    """Load a bundle checkpoint (a bare state dict, or a dict holding ``network``/``state_dict``)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(path, "model checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputError(path, f"cannot read model checkpoint ({type(exc).__name__})") from None
    for key in ("network", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(path, f"checkpoint does not fit the network ({str(exc).splitlines()[0]})") from None
    return network
