"""Segment one image in memory with the bundle's inference configuration (the library door).

:func:`load_segmenter` parses ``configs/inference.json`` of a bundle and hands its ``network``, ``preprocessing``,
``inferer`` and ``postprocessing`` to a :class:`Segmenter`, so ``hipposeg segment`` and
``python -m monai.bundle run --config_file configs/inference.json`` run one engine: the same network, preprocessing,
inferer (axes, context, TTA) and post-processing recipe (``Invertd`` -> ``AsDiscreted`` ->
``KeepLargestConnectedComponentd``), parsed from the same file. Only the file writing is left out: the bundle
writes each case with :class:`~hipposeg.inference.WriteSegmentationd`, ``hipposeg segment`` writes a whole case
(mask, QC picture, volume row; see :mod:`hipposeg.segment`). Both compute the confidence with :func:`confidence`:
the bundle in its inferer (``confidence: true``), the segmenter from the inferer's ``parts`` when asked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, Compose, SaveImaged

from hipposeg.data.readers import Image
from hipposeg.inference import CopyMetaItemd, WriteSegmentationd
from hipposeg.runtime import precision_of, runtime_of

#: Post-processing steps that write files, and the one that hands the writer the inferer's confidence: dropped from
#: the bundle's recipe when segmenting in memory (the Segmenter computes the confidence itself, when asked).
WRITER_TRANSFORMS = (WriteSegmentationd, SaveImaged, CopyMetaItemd)


@dataclass
class Segmentation:
    labels: np.ndarray  # uint8, the input's grid
    probabilities: np.ndarray | None  # (C, *input shape) float32, when asked for
    seconds: dict
    confidence: dict | None = None  # hipposeg.confidence: the features, "predicted_dice" and its threshold, if asked


def in_memory_steps(postprocessing: Callable) -> Compose:
    """The bundle's ``postprocessing`` (a ``Compose``) without the steps of its file writing
    (:data:`WRITER_TRANSFORMS`)."""
    steps = list(getattr(postprocessing, "transforms", [postprocessing]))
    return Compose([t for t in steps if not isinstance(t, WRITER_TRANSFORMS)])


def probability_steps(postprocessing: Compose) -> Compose:
    """The steps of the in-memory post-processing before the first one that turns probabilities into labels
    (``AsDiscreted``): for the bundle's recipe, ``Invertd`` and the copy of the probabilities into ``"prob"``."""
    steps = list(postprocessing.transforms)
    first_label_step = next((i for i, t in enumerate(steps) if isinstance(t, AsDiscreted)), len(steps))
    return Compose(steps[:first_label_step])


class Segmenter:
    """Network + preprocessing + inferer + post-processing, loaded once, applied to many images.

    ``postprocessing`` is the bundle's recipe (its file writers are dropped, see :func:`in_memory_steps`): it
    receives ``{"image": preprocessed image, "pred": probabilities}`` and must leave the labels ``(1, *shape)``
    in ``"pred"`` and the probabilities on the input's grid ``(C, *shape)`` in ``"prob"``.
    """

    def __init__(self, network: torch.nn.Module, preprocessing: Callable, inferer: Callable,
                 postprocessing: Callable, *, device="cpu", label_names: dict | None = None,
                 checkpoint: str | None = None, partner_checkpoint: str | None = None):
        from hipposeg.training import set_threads

        set_threads(None)  # flush denormals: a trained network on a CPU is otherwise up to 10x slower
        self.network = network.to(device).eval()
        self.preprocessing, self.inferer = preprocessing, inferer
        self.postprocessing = in_memory_steps(postprocessing)
        self.probability_steps = probability_steps(self.postprocessing)
        self.device = torch.device(device)
        self.label_names = label_names or {0: "background", 1: "anterior", 2: "posterior"}
        self.checkpoint = checkpoint  # the weights file, recorded in volumes.csv
        self.partner_checkpoint = partner_checkpoint  # the 3D partner's weights (hipposeg.ensemble), if any
        self.runtime = runtime_of(self.network)  # torch, onnx or openvino (hipposeg.runtime)
        self.precision = precision_of(self.network)  # float32, or int8 for OpenVINO's quantized core

    def predict_probabilities(self, image: Image) -> np.ndarray:
        """Class probabilities ``(C, *image.shape)`` on the image's own grid: the post-processing up to the step that
        keeps them (:func:`probability_steps`), without the argmax and largest component, whose labels a caller that
        wants probabilities (the whole-head path makes its labels once, on the scan grid) would throw away. No
        confidence is computed (:meth:`predict_with_confidence` computes it)."""
        return self._probabilities(image, with_confidence=False)[0]

    def predict_with_confidence(self, image: Image) -> tuple[np.ndarray, dict]:
        """:meth:`predict_probabilities` and the crop's confidence (:func:`confidence`)."""
        return self._probabilities(image, with_confidence=True)

    @torch.inference_mode()
    def _probabilities(self, image: Image, *, with_confidence: bool) -> tuple[np.ndarray, dict | None]:
        data, confidence_, _, _ = self._predict(image, with_confidence=with_confidence)
        probabilities = np.asarray(_array(self.probability_steps(data)["prob"]), dtype=np.float32)
        if probabilities.shape[1:] != image.shape:
            raise RuntimeError(f"{image.path}: probabilities of shape {probabilities.shape} for input {image.shape}")
        return probabilities, confidence_

    def _predict(self, image: Image, *, with_confidence: bool) -> tuple[dict, dict | None, float, float]:
        """``{"image": preprocessed, "pred": the inferer's probabilities}``, the confidence (features and predicted
        Dice, from the inferer's ``parts`` when it has them; None unless ``with_confidence``) and the seconds of both
        steps. Without ``with_confidence`` the inferer is called as the bundle calls it, keeping no parts."""
        t0 = time.perf_counter()
        tensor = MetaTensor(torch.as_tensor(np.asarray(image.array, dtype=np.float32)),
                            affine=torch.as_tensor(image.affine, dtype=torch.float64))
        data = self.preprocessing({"image": tensor})
        t1 = time.perf_counter()
        inputs = data["image"].to(self.device)[None]
        if with_confidence and hasattr(self.inferer, "parts"):
            parts = self.inferer.parts(inputs, self.network)
        else:
            parts = {"prob": self.inferer(inputs, self.network)}
        prob = parts["prob"][0].cpu()
        data["pred"] = MetaTensor(prob, meta=data["image"].meta, applied_operations=data["image"].applied_operations)
        return data, confidence(parts) if with_confidence else None, t1 - t0, time.perf_counter() - t1

    @torch.inference_mode()
    def segment(self, image: Image, return_probabilities: bool = False, *,
                with_confidence: bool = True) -> Segmentation:
        """Labels on the image's grid; with ``return_probabilities`` the class probabilities too; with
        ``with_confidence`` (default: ``hipposeg segment`` writes its ``predicted_dice``) the confidence
        (:func:`confidence`), else ``confidence`` is None and none of it is computed."""
        data, confidence_, preprocess_s, predict_s = self._predict(image, with_confidence=with_confidence)
        t2 = time.perf_counter()
        data = self.postprocessing(data)
        labels = np.asarray(_array(data["pred"])[0], dtype=np.uint8)
        t3 = time.perf_counter()
        if labels.shape != image.shape:
            raise RuntimeError(f"{image.path}: prediction shape {labels.shape} differs from input {image.shape}")
        probabilities = np.asarray(_array(data["prob"]), dtype=np.float32) if return_probabilities else None
        return Segmentation(labels, probabilities, {"preprocess": preprocess_s, "predict": predict_s,
                                                    "postprocess": t3 - t2}, confidence_)


def confidence(parts: dict) -> dict:
    """The confidence features of an inferer's ``parts``, the Dice they predict (``"predicted_dice"``, None
    without a stored mapping whose features are all there) and the ``low_confidence`` threshold of the mapping that
    predicted it (``"low_confidence_below"``): :mod:`hipposeg.confidence`."""
    from hipposeg.confidence import confidence_features, confidence_prediction

    features = confidence_features(parts)
    return {**features, **confidence_prediction(features)}


def _array(value) -> np.ndarray:
    return np.asarray(value.detach().cpu()) if hasattr(value, "detach") else np.asarray(value)


def load_segmenter(model: str | Path | None = None, *, partner: str | Path | None = None,
                   bundle_dir: str | Path | None = None, device: str = "cpu", flip_tta: bool | None = None,
                   batch_size: int | None = None, runtime: str | None = None, int8: bool | None = None,
                   overrides: dict | None = None) -> Segmenter:
    """Build a :class:`Segmenter` from a bundle's ``inference.json`` (default: the bundle shipped with hipposeg).

    ``model`` and ``partner`` select the networks exactly as ``--model`` does at every door
    (:func:`hipposeg.bundle.resolve_model`: a shipped model's name, a bundle folder, a checkpoint file, or None for
    the bundle's default); ``runtime`` runs them with PyTorch, ONNX Runtime or OpenVINO (``inference.json``'s
    ``runtime``, default ``auto``: :func:`hipposeg.runtime.choose_runtime`); ``int8=False`` keeps OpenVINO off the
    core's shipped int8 copy (``inference.json``'s ``int8``, :mod:`hipposeg.quantize`); ``overrides`` are any other
    ``inference.json`` keys. The network (weights loaded by the
    config), inferer and post-processing are the config's own, whatever they are."""
    from hipposeg.bundle import parse_bundle, resolve_model, switch

    bundle_dir, model_overrides = resolve_model(model, bundle_dir, partner=partner)
    # confidence off in the inferer: the Segmenter asks for the inferer's parts itself, only when it wants them
    values = {"device": f"$torch.device({str(device)!r})", "load_images": False, "confidence": False,
              **model_overrides, **(overrides or {})}
    if flip_tta is not None:
        values["flip_tta"] = bool(flip_tta)
    if batch_size:
        values["batch_size"] = int(batch_size)
    if runtime:
        values["runtime"] = str(runtime)
    if int8 is not None:
        values["int8"] = bool(int8)
    parser = parse_bundle(["inference.json"], bundle_dir, values)
    content = parser.get_parsed_content
    partner_path = content("partner_ckpt_path") if switch(content("use_partner")) else None
    return Segmenter(network=content("network"), preprocessing=content("preprocessing"), inferer=content("inferer"),
                     postprocessing=content("postprocessing"), device=device, label_names=content("label_names"),
                     checkpoint=str(Path(content("ckpt_path")).resolve()),
                     partner_checkpoint=_resolved(partner_path))


def _resolved(path) -> str | None:
    return str(Path(path).resolve()) if path else None


def load_crop_predictor(**kwargs) -> Callable[[Image], np.ndarray]:
    """The crop model as a function ``Image -> probabilities (3, *shape)`` (used by the whole-head path)."""
    return load_segmenter(**kwargs).predict_probabilities
