"""Segment one image in memory with the bundle's inference configuration (the library door).

:func:`load_segmenter` reads ``configs/inference.json`` of a bundle, so ``hipposeg segment`` and
``python -m monai.bundle run --config_file configs/inference.json`` run the same network, preprocessing,
inferer (axes, context, TTA) and post-processing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd

from hipposeg.data.readers import Image
from hipposeg.inference import probabilities_to_labels
from hipposeg.model import load_weights


@dataclass
class Segmentation:
    labels: np.ndarray  # uint8, the input's grid
    probabilities: np.ndarray | None  # (C, *input shape) float32, when asked for
    seconds: dict


class Segmenter:
    """Network + preprocessing + slice inferer + post-processing, loaded once, applied to many images."""

    def __init__(self, network: torch.nn.Module, preprocessing: Callable, inferer: Callable, device="cpu",
                 keep_largest: bool = True, label_names: dict | None = None, checkpoint: str | None = None):
        from hipposeg.training import set_threads

        set_threads(None)  # flush denormals: a trained network on a CPU is otherwise up to 10x slower
        self.network = network.to(device).eval()
        self.preprocessing, self.inferer = preprocessing, inferer
        self.device, self.keep_largest = torch.device(device), keep_largest
        self.label_names = label_names or {0: "background", 1: "anterior", 2: "posterior"}
        self.checkpoint = checkpoint  # the weights file, recorded in volumes.csv
        self._invert = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False,
                               to_tensor=True)

    @torch.inference_mode()
    def predict_probabilities(self, image: Image) -> np.ndarray:
        """Class probabilities ``(C, *image.shape)`` on the image's own grid."""
        return self._run(image)[0]

    @torch.inference_mode()
    def _run(self, image: Image) -> tuple[np.ndarray, dict]:
        t0 = time.perf_counter()
        tensor = MetaTensor(torch.as_tensor(np.asarray(image.array, dtype=np.float32)),
                            affine=torch.as_tensor(image.affine, dtype=torch.float64))
        data = self.preprocessing({"image": tensor})
        t1 = time.perf_counter()
        x = data["image"].to(self.device)[None]
        prob = self.inferer(x, self.network)[0].cpu()
        t2 = time.perf_counter()
        data["pred"] = MetaTensor(prob, meta=data["image"].meta, applied_operations=data["image"].applied_operations)
        prob = self._invert(data)["pred"]
        out = np.asarray(prob.detach().cpu() if hasattr(prob, "detach") else prob, dtype=np.float32)
        t3 = time.perf_counter()
        return out, {"preprocess": t1 - t0, "predict": t2 - t1, "invert": t3 - t2}

    def segment(self, image: Image, return_probabilities: bool = False) -> Segmentation:
        prob, seconds = self._run(image)
        t = time.perf_counter()
        labels = probabilities_to_labels(prob, self.keep_largest)
        seconds["postprocess"] = time.perf_counter() - t
        if labels.shape != image.shape:
            raise RuntimeError(f"{image.path}: prediction shape {labels.shape} differs from input {image.shape}")
        return Segmentation(labels, prob if return_probabilities else None, seconds)


def load_segmenter(bundle_dir: str | Path | None = None, checkpoint: str | Path | None = None,
                   device: str = "cpu", flip_tta: bool | None = None, batch_size: int | None = None,
                   overrides: dict | None = None) -> Segmenter:
    """Build a :class:`Segmenter` from a bundle's ``inference.json`` (default: the bundle shipped with hipposeg)
    and its ``models/model.pt`` (or ``checkpoint``: a bundle folder or a ``.pt`` file)."""
    from hipposeg.bundle import BUNDLE_DIR, parse_bundle

    if checkpoint is not None and Path(checkpoint).is_dir():  # --model given a bundle folder
        bundle_dir, checkpoint = checkpoint, None
    bundle_dir = Path(bundle_dir or BUNDLE_DIR)
    values = {"device": f"$torch.device({str(device)!r})", "preprocessing#load": False, **(overrides or {})}
    if flip_tta is not None:
        values["flip_tta"] = bool(flip_tta)
    if batch_size:
        values["batch_size"] = int(batch_size)
    if checkpoint is not None:
        values["ckpt_path"] = str(checkpoint)
    parser = parse_bundle(["inference.json"], bundle_dir, values)
    checkpoint = parser.get_parsed_content("ckpt_path")
    network = parser.get_parsed_content("network_def")  # inference.json reads the architecture from the checkpoint
    load_weights(network, checkpoint)
    from hipposeg.data.manifest import load_manifest

    labels = load_manifest(parser.get_parsed_content("manifest_file")).label_names(parser.get_parsed_content("dataset"))
    return Segmenter(network=network, preprocessing=parser.get_parsed_content("preprocessing"),
                     inferer=parser.get_parsed_content("inferer"), device=device,
                     keep_largest=bool(parser.get_parsed_content("keep_largest")), label_names=labels,
                     checkpoint=str(Path(checkpoint).resolve()))


def load_crop_predictor(**kwargs) -> Callable[[Image], np.ndarray]:
    """The crop model as a function ``Image -> probabilities (3, *shape)`` (used by the whole-head path)."""
    return load_segmenter(**kwargs).predict_probabilities
