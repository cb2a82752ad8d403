"""The 3D-aware model: the EfficientNet-B0 three-axis consensus (the core) averaged with a MONAI 3D network (the partner).

:class:`CoreAndPartner` holds both networks (``partner`` may be ``None``: the core alone); :class:`EnsembleInferer`
runs the core slice by slice (:class:`~hipposeg.inference.MultiAxisSliceInferer`), the partner on the whole volume
(:class:`~hipposeg.inference.VolumeInferer`) and returns the weighted mean of their class probabilities, with the
input's meta data, so ``Invertd`` and the rest of the post-processing see one probability map as before; with
``confidence`` (the bundle's ``confidence`` key) that map also carries each case's confidence in its meta data
(:data:`CONFIDENCE_META_KEY`), for the bundle's writer.
:func:`load_network` loads the weights of either kind from the bundle's ``models/`` files and hands them to the
CPU runtime :mod:`hipposeg.runtime` chooses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

#: The meta-data key under which :class:`EnsembleInferer` with ``confidence`` hands each case's confidence on.
CONFIDENCE_META_KEY = "confidence"


class CoreAndPartner(nn.Module):
    """A 2.5D core network and an optional 3D partner network, run together by :class:`EnsembleInferer`."""

    def __init__(self, core: nn.Module, partner: nn.Module | None = None):
        super().__init__()
        self.core, self.partner = core, partner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("CoreAndPartner has no single forward pass: run it through hipposeg.ensemble.EnsembleInferer")


class EnsembleInferer(Inferer):
    """Probabilities ``(B, C, X, Y, Z)``: ``(1 - partner_weight) * core + partner_weight * partner``.

    ``network`` is a :class:`CoreAndPartner` (its ``partner`` may be None: the core alone) or a plain 2D network
    (the slice inferer alone).

    With ``confidence`` (off by default; ``inference.json``'s ``confidence`` key), calling the inferer keeps the
    :meth:`parts` and hands each case's confidence on in the meta data of the probabilities it returns (see
    :func:`confidence_meta`); the probabilities are the same. ``hipposeg segment`` does not use this: its
    :class:`~hipposeg.segmenter.Segmenter` asks for :meth:`parts` itself.
    """

    def __init__(self, slice_inferer: Callable, volume_inferer: Callable, partner_weight: float = 0.5,
                 confidence: bool = False):
        super().__init__()
        if not 0.0 <= float(partner_weight) <= 1.0:
            raise ValueError(f"partner_weight must be in [0, 1], got {partner_weight}")
        self.slice_inferer, self.volume_inferer = slice_inferer, volume_inferer
        self.partner_weight = float(partner_weight)
        self.confidence = bool(confidence)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.confidence:
            return self._infer(inputs, network, keep_parts=False)["prob"]
        parts = self._infer(inputs, network, keep_parts=True)
        prob = parts["prob"] if isinstance(parts["prob"], MetaTensor) else MetaTensor(parts["prob"])
        prob.meta = {**prob.meta, CONFIDENCE_META_KEY: confidence_meta(parts)}  # a new dict: the input's stays
        return prob

    def parts(self, inputs: torch.Tensor, network: nn.Module) -> dict:
        """``{"prob": what the inferer returns, "core": the core's probabilities, "partner": the partner's (None
        without one), "axes": the core's per slicing axis}``, for the confidence features
        (:mod:`hipposeg.confidence`); the mean is made exactly as by calling the inferer, which keeps no parts."""
        return self._infer(inputs, network, keep_parts=True)

    def _infer(self, inputs: torch.Tensor, network: nn.Module, *, keep_parts: bool) -> dict:
        core = getattr(network, "core", network)
        partner = getattr(network, "partner", None)
        if keep_parts and hasattr(self.slice_inferer, "parts"):
            found = dict(self.slice_inferer.parts(inputs, core))
        else:
            found = {"prob": self.slice_inferer(inputs, core)}
        prob = found["core"] = found["prob"]
        found["partner"] = None
        if partner is not None and self.partner_weight > 0:
            other = found["partner"] = self.volume_inferer(inputs, partner)
            w = self.partner_weight
            mixed = (1.0 - w) * torch.as_tensor(prob) + w * torch.as_tensor(other)
            # classes fastest in memory, like the slice inferer's output: AsDiscreted's argmax is ~50x faster
            mixed = mixed.contiguous(memory_format=torch.channels_last_3d)
            if isinstance(inputs, MetaTensor):
                mixed = MetaTensor(mixed)
                mixed.copy_meta_from(inputs)
            prob = mixed
        found["prob"] = prob
        return found


def confidence_meta(parts: dict) -> dict[str, list]:
    """The confidence of each case of a batch's :meth:`EnsembleInferer.parts` (:func:`hipposeg.segmenter.confidence`,
    what ``hipposeg segment`` computes: the features and ``predicted_dice``) as ``{name: [value of each case]}``,
    the form MONAI's ``decollate_batch`` splits into one ``{name: value}`` per case."""
    from hipposeg.segmenter import confidence

    def case(i: int) -> dict:
        return confidence({"prob": parts["prob"][i:i + 1], "core": parts["core"][i:i + 1],
                           "partner": None if parts.get("partner") is None else parts["partner"][i:i + 1],
                           "axes": [axis[i:i + 1] for axis in parts.get("axes") or []]})

    cases = [case(i) for i in range(len(parts["prob"]))]
    return {name: [c[name] for c in cases] for name in cases[0]} if cases else {}


def load_network(core: nn.Module, ckpt_path: str | Path, *, partner: nn.Module | None = None,
                 partner_ckpt_path: str | Path | None = None, device: str | torch.device = "cpu",
                 runtime: str = "auto", int8: bool = True) -> nn.Module:
    """The bundle's ``network``: ``core`` with the weights of ``ckpt_path`` alone, or, given a ``partner`` (the
    3D network) and its ``partner_ckpt_path``, both as a :class:`CoreAndPartner`; on ``device``, run by the
    ``runtime`` :func:`hipposeg.runtime.choose_runtime` picks (``auto``: the fastest installed one on a CPU, PyTorch
    on a GPU; under OpenVINO the core's shipped int8 copy unless ``int8`` is false: :func:`hipposeg.runtime.accelerate`).
    One loader for every door (bundle run, ``hipposeg segment``, benches). ``network_def`` stays the
    plain core network, so MONAI's ``verify_net_in_out`` and ``ckpt_export`` work on it as on any bundle."""
    from hipposeg.errors import InputError
    from hipposeg.model import load_weights
    from hipposeg.runtime import accelerate, choose_runtime

    fallback = str(runtime or "auto").lower() == "auto"  # auto's choice may fall back to PyTorch; a named one not
    runtime = choose_runtime(runtime, device)
    load_weights(core, ckpt_path)
    core = accelerate(core.eval(), ckpt_path, part="core", runtime=runtime, fallback=fallback, int8=int8)
    if partner is None:
        return core.to(device)
    if partner_ckpt_path is None:
        raise InputError(None, "a 3D partner network was given without its checkpoint (partner_ckpt_path)")
    load_weights(partner, partner_ckpt_path)
    partner = accelerate(partner.eval(), partner_ckpt_path, part="partner", runtime=runtime, fallback=fallback)
    return CoreAndPartner(core, partner).to(device)
