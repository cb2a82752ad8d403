"""Slice-wise inference: predict every slice of a volume, stack back to 3D, optionally along several axes.

:class:`MultiAxisSliceInferer` is a MONAI ``Inferer``: given a batch of 3D volumes ``(B, 1, X, Y, Z)`` and a
2D network, it returns class probabilities ``(B, C, X, Y, Z)``. Along each configured axis it cuts every slice
(with ``context`` neighbours as channels, edges replicated), pads the plane to a multiple of 32, predicts in
batches, crops the padding away and stacks. Several axes are averaged (the three-axis consensus); flip
test-time augmentation mirrors the volume left-right and averages the mirrored prediction back.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from monai.inferers import Inferer

from hipposeg.transforms import ENCODER_DIVISOR


def _pad_to_multiple(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    top, left = ph // 2, pw // 2
    if ph or pw:
        x = F.pad(x, (left, pw - left, top, ph - top), mode="replicate")
    return x, (slice(top, top + h), slice(left, left + w))


class MultiAxisSliceInferer(Inferer):
    """Slice-by-slice inference of a 2D network over 3D volumes.

    Args:
        axes: slicing axes of the (RAS) volume: 0 sagittal, 1 coronal, 2 axial. Several = consensus (mean of
            the class probabilities).
        context: input channels = neighbouring slices (odd; 1 = plain 2D).
        batch_size: slices per forward pass.
        flip_tta: also predict the left-right mirrored volume and average.
        divisor: pad each plane to a multiple of this (the encoder's stride).
    """

    def __init__(self, axes: Sequence[int] = (0, 1, 2), context: int = 3, batch_size: int = 64,
                 flip_tta: bool = False, divisor: int = ENCODER_DIVISOR):
        super().__init__()
        self.axes = tuple(int(a) for a in axes)
        self.context, self.batch_size, self.flip_tta, self.divisor = int(context), int(batch_size), flip_tta, divisor

    def _predict_axis(self, volume: torch.Tensor, network: Callable, axis: int) -> torch.Tensor:
        """``volume`` (X, Y, Z) -> probabilities (C, X, Y, Z) from slices along ``axis``."""
        vol = volume.movedim(axis, 0)  # (S, H, W)
        n = vol.shape[0]
        half = self.context // 2
        idx = torch.arange(n, device=vol.device)[:, None] + torch.arange(-half, half + 1, device=vol.device)
        stacks = vol[idx.clamp_(0, n - 1)]  # (S, context, H, W)
        stacks, crop = _pad_to_multiple(stacks, self.divisor)
        probs = []
        for start in range(0, n, self.batch_size):
            logits = network(stacks[start:start + self.batch_size])
            probs.append(torch.softmax(logits.float(), dim=1)[..., crop[0], crop[1]])
        out = torch.cat(probs, 0)  # (S, C, H, W)
        return out.movedim(0, axis + 1)  # (C, ...) with the slice axis back in place

    def _predict_volume(self, volume: torch.Tensor, network: Callable) -> torch.Tensor:
        total = None
        for axis in self.axes:
            p = self._predict_axis(volume, network, axis)
            total = p if total is None else total + p
        return total / len(self.axes)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.ndim != 5 or inputs.shape[1] != 1:
            raise ValueError(f"expected volumes of shape (B, 1, X, Y, Z), got {tuple(inputs.shape)}")
        data = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        outs = []
        for volume in data[:, 0]:
            prob = self._predict_volume(volume, network)
            if self.flip_tta:
                mirrored = self._predict_volume(volume.flip(0), network).flip(1)
                prob = (prob + mirrored) / 2
            outs.append(prob)
        return torch.stack(outs, 0)
