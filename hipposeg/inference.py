"""Slice-wise inference: predict every slice of a volume, stack back to 3D, optionally along several axes.

:class:`MultiAxisSliceInferer` is a MONAI ``Inferer``: given a batch of 3D volumes ``(B, 1, X, Y, Z)`` and a
2D network, it returns class probabilities ``(B, C, X, Y, Z)``. Along each configured axis it cuts every slice
(with ``context`` neighbours as channels, edges replicated), pads the plane to a multiple of 32 and to at least
64 pixels a side (``min_size``), predicts in batches, crops the padding away and stacks. Several axes are averaged
(the three-axis consensus); flip test-time augmentation mirrors the volume left-right and averages the mirrored
prediction back.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer

from hipposeg.transforms import ENCODER_DIVISOR


def _pad_to_multiple(x: torch.Tensor, divisor: int, min_size: int = 0) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Pad the last two axes (replicating the edges, centred) to a multiple of ``divisor`` and at least
    ``min_size``; also return the crop that undoes it."""
    h, w = x.shape[-2:]
    ph = max(min_size, -(-h // divisor) * divisor) - h
    pw = max(min_size, -(-w // divisor) * divisor) - w
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
        min_size: and to at least this many pixels per side. The training slices of Task04 crops (31-59 voxels
            per side) are padded to 64 in all but a few cases; a plane padded only to 32 (a crop 32 voxels or
            less across, or a thick-slice scan resampled to 1 mm) leaves the network a 1-pixel bottleneck it
            rarely saw, and it then misses parts of the hippocampus (fold-0 whole Dice 0.885 -> 0.895 with 64).
    """

    def __init__(self, axes: Sequence[int] = (0, 1, 2), context: int = 3, batch_size: int = 64,
                 flip_tta: bool = False, divisor: int = ENCODER_DIVISOR, min_size: int = 2 * ENCODER_DIVISOR):
        super().__init__()
        self.axes = tuple(int(a) for a in axes)
        self.context, self.batch_size, self.flip_tta, self.divisor = int(context), int(batch_size), flip_tta, divisor
        self.min_size = int(min_size)

    def _slice_stacks(self, volume: torch.Tensor, axis: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
        """The network inputs of ``volume`` (X, Y, Z) along ``axis``: (S, context, H', W') padded planes, and the
        crop that undoes the padding."""
        vol = volume.movedim(axis, 0)  # (S, H, W)
        n = vol.shape[0]
        half = self.context // 2
        idx = torch.arange(n, device=vol.device)[:, None] + torch.arange(-half, half + 1, device=vol.device)
        return _pad_to_multiple(vol[idx.clamp_(0, n - 1)], self.divisor, self.min_size)

    def _predict_volume(self, volume: torch.Tensor, network: Callable) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``volume`` (X, Y, Z) -> probabilities (C, X, Y, Z), the mean over the axes, and each axis's own (in the
        order of ``axes``). The slices of all axes whose
        padded planes have one size (all three for a Task04 crop, every plane padded to 64x64) go through the
        network together, ``batch_size`` at a time: fewer, fuller passes (one ragged last batch per crop instead
        of one per axis)."""
        stacks = {axis: self._slice_stacks(volume, axis) for axis in self.axes}
        groups: dict[tuple, list[int]] = {}
        for axis, (x, _) in stacks.items():
            groups.setdefault(tuple(x.shape[-2:]), []).append(axis)
        per_axis = {}
        for axes in groups.values():
            batch = torch.cat([stacks[a][0] for a in axes]) if len(axes) > 1 else stacks[axes[0]][0]
            logits = [network(batch[i:i + self.batch_size]).float() for i in range(0, len(batch), self.batch_size)]
            probs = torch.softmax(torch.cat(logits), dim=1)  # (sum of S, C, H', W')
            start = 0
            for axis in axes:
                x, crop = stacks[axis]
                per_axis[axis] = probs[start:start + len(x), :, crop[0], crop[1]].movedim(0, axis + 1)  # (C, X, Y, Z)
                start += len(x)
        total = per_axis[self.axes[0]]
        for axis in self.axes[1:]:
            total = total + per_axis[axis]
        return total / len(self.axes), [per_axis[axis] for axis in self.axes]

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._infer(inputs, network, keep_axes=False)["prob"]

    def parts(self, inputs: torch.Tensor, network: Callable) -> dict:
        """``{"prob": what the inferer returns, "axes": [(B, C, X, Y, Z) of each slicing axis]}``: the per-axis
        probabilities that the consensus averages, kept for the confidence features (:mod:`hipposeg.confidence`).
        Calling the inferer does not keep them."""
        return self._infer(inputs, network, keep_axes=True)

    def _infer(self, inputs: torch.Tensor, network: Callable, *, keep_axes: bool) -> dict:
        if inputs.ndim != 5 or inputs.shape[1] != 1:
            raise ValueError(f"expected volumes of shape (B, 1, X, Y, Z), got {tuple(inputs.shape)}")
        data = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        outs, axes = [], []
        for volume in data[:, 0]:
            prob, per_axis = self._predict_volume(volume, network)
            if self.flip_tta:
                mirrored, mirrored_axes = self._predict_volume(volume.flip(0), network)
                prob = (prob + mirrored.flip(1)) / 2
                if keep_axes:
                    per_axis = [(p + m.flip(1)) / 2 for p, m in zip(per_axis, mirrored_axes)]
            outs.append(prob)
            if keep_axes:
                axes.append(per_axis)
        # classes fastest in memory (same values and shape): the post-processing's argmax over the classes
        # (AsDiscreted) is then ~50x faster on a CPU (22 -> 0.4 ms for a crop); Invertd keeps the layout
        out = torch.stack(outs, 0).contiguous(memory_format=torch.channels_last_3d)
        if isinstance(inputs, MetaTensor):
            # carry the input's meta data and transform trace, as MONAI's own inferers do: Invertd needs them to
            # undo the orientation and spacing of the preprocessing (without them a non-RAS input came back mirrored)
            out = MetaTensor(out)
            out.copy_meta_from(inputs)
        if not keep_axes:
            return {"prob": out}
        return {"prob": out, "axes": [torch.stack([a[i] for a in axes], 0) for i in range(len(self.axes))]}


class VolumeInferer(Inferer):
    """Whole-volume inference of a 3D network: pad ``(B, 1, X, Y, Z)`` symmetrically with zeros (the mean of a
    z-scored image, as in training) to at least ``patch_size`` and a multiple of ``divisor`` per axis, predict in
    one pass, return the class probabilities ``(B, C, X, Y, Z)`` on the input's grid (meta data carried for
    ``Invertd``)."""

    def __init__(self, patch_size: Sequence[int] = (48, 64, 48), divisor: int = 16):
        super().__init__()
        self.patch_size, self.divisor = tuple(int(p) for p in patch_size), int(divisor)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.ndim != 5:
            raise ValueError(f"expected volumes of shape (B, C, X, Y, Z), got {tuple(inputs.shape)}")
        data = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        size = data.shape[2:]
        target = [max(p, -(-s // self.divisor) * self.divisor) for s, p in zip(size, self.patch_size)]
        before = [(t - s) // 2 for s, t in zip(size, target)]
        pad = []
        for s, t, b in reversed(list(zip(size, target, before))):
            pad += [b, t - s - b]
        logits = network(F.pad(data, pad))
        crop = tuple(slice(b, b + s) for s, b in zip(size, before))
        out = torch.softmax(logits.float(), dim=1)[(slice(None), slice(None)) + crop]
        if isinstance(inputs, MetaTensor):
            out = MetaTensor(out)
            out.copy_meta_from(inputs)
        return out


#: Neighbourhood of the largest-component rule, in MONAI's terms (orthogonal hops): 3 = 26-connectivity in 3D, so
#: voxels touching by a corner belong to one structure. The bundle's ``KeepLargestConnectedComponentd`` in
#: ``inference.json`` uses the same value (a test pins them together); the whole-head path uses it per side.
LARGEST_COMPONENT_CONNECTIVITY = 3


def keep_largest_component(labels, *, connectivity: int = LARGEST_COMPONENT_CONNECTIVITY):
    """``labels`` (integer label map ``(X, Y, Z)``) with only the largest connected component of the foreground
    kept, all labels merged (a component may hold anterior and posterior voxels); everything else set to 0.

    This is MONAI's ``KeepLargestConnectedComponent(independent=False)``, the transform the bundle's
    ``postprocessing`` runs, so the crop and whole-head paths apply one rule. Returns a new array of the same
    type and dtype (numpy in, numpy out).
    """
    import numpy as np
    from monai.transforms import KeepLargestConnectedComponent

    keep = KeepLargestConnectedComponent(independent=False, connectivity=connectivity)
    array = np.asarray(labels)
    return np.asarray(keep(array[None].copy())[0], dtype=array.dtype)


def list_volumes(folder: str) -> list[dict]:
    """MONAI datalist of the NIfTI files in ``folder`` (sorted), or of one file. Files named like hipposeg's
    outputs (``*_seg.nii.gz``, ``*_prob.nii.gz``) are not inputs: a run into its input folder never reads them."""
    from pathlib import Path

    from hipposeg.data.readers import is_nifti
    from hipposeg.data.writers import is_output_name
    from hipposeg.errors import InputError

    path = Path(folder)
    if path.is_file() and is_nifti(path):
        return [{"image": str(path)}]
    if not path.is_dir():
        raise InputError(path, "no such folder")
    files = [{"image": str(p)} for p in sorted(path.iterdir())
             if is_nifti(p) and not p.name.startswith(".") and not is_output_name(p)]
    if not files:
        raise InputError(path, "holds no NIfTI files (.nii, .nii.gz) other than hipposeg outputs")
    return files


class CopyMetaItemd:
    """``d[name] = d[key].meta[meta_key]`` where the meta data of ``d[key]`` has that item (else nothing): keeps an
    item of a tensor's meta data that a later step replaces. ``Invertd`` gives the prediction the image's meta data,
    so the bundle's ``postprocessing`` copies the confidence :class:`~hipposeg.ensemble.EnsembleInferer` hands on
    (``confidence: true``) to ``d["confidence"]`` before it, where :class:`WriteSegmentationd` finds it."""

    def __init__(self, key: str = "pred", meta_key: str = "confidence", name: str | None = None):
        self.key, self.meta_key, self.name = key, meta_key, name or meta_key

    def __call__(self, data: dict) -> dict:
        meta = getattr(data.get(self.key), "meta", None) or {}
        if self.meta_key not in meta:
            return data
        d = dict(data)
        d[self.name] = meta[self.meta_key]
        return d


class WriteSegmentationd:
    """The bundle's writer: per case, in ``output_dir``,

    * ``<case>_seg.nii.gz`` (``d["pred"]``, the post-processed labels, uint8, exactly the input file's shape and
      affine) with its label-names sidecar ``<case>_seg.json``;
    * ``<case>_prob.nii.gz`` (``d["prob"]``, float32, classes on the last axis) when ``save_probabilities``;
    * ``<case>_uncertainty.nii.gz`` when ``save_uncertainty``: :func:`hipposeg.confidence.uncertainty_map` of
      ``d["prob"]`` (the probabilities on the input's grid that the labels are the argmax of), as ``hipposeg segment
      --save-uncertainty`` writes it; a case written without it keeps no map of an earlier run;
    * last, the row file ``<case>_volumes.json`` of ``hipposeg segment`` (:mod:`hipposeg.batch`): the case's volume
      row (:func:`hipposeg.volumes.volume_row`: volumes, ``qc_ok``, ``qc_flags``), the networks that made the mask
      (``model``, ``model_3d``) and, when ``d["confidence"]`` holds the case's confidence (``confidence: true``,
      see :class:`CopyMetaItemd`), its ``predicted_dice`` and ``low_confidence`` flag
      (:func:`hipposeg.segment.confidence_qc`: ``segment``'s columns, threshold and flag).
      ``inference.json`` then rebuilds ``volumes.csv``/``volumes.json`` from every finished case in the folder
      (:func:`hipposeg.batch.rebuild_volume_tables`), as ``hipposeg segment`` does.

    Not MONAI's ``SaveImaged``: that one writes in place (a run killed mid-write leaves a truncated mask that looks
    finished) and replaces existing files silently. This writer goes through
    :func:`hipposeg.data.writers.write_segmentation`, the one writer of every door: temporary name + rename, and
    an existing output is kept unless ``overwrite`` (checked for all outputs of a case before writing any).
    """

    def __init__(self, output_dir: str, label_names: dict | None = None, save_probabilities: bool = False,
                 overwrite: bool = False, key: str = "pred", prob_key: str = "prob", save_uncertainty: bool = False,
                 model: str | None = None, model_3d: str | None = None, confidence_key: str = "confidence"):
        self.output_dir, self.label_names = output_dir, label_names
        self.save_probabilities, self.overwrite, self.key, self.prob_key = save_probabilities, overwrite, key, prob_key
        self.save_uncertainty, self.confidence_key = save_uncertainty, confidence_key
        self.model, self.model_3d = model, model_3d  # the checkpoints of the core and the 3D partner (None: none)

    def __call__(self, data: dict) -> dict:
        import nibabel as nib
        import numpy as np

        from hipposeg.batch import CaseFiles, write_row_file
        from hipposeg.data.readers import case_name
        from hipposeg.data.writers import check_writable, segmentation_paths, write_nifti, write_segmentation

        labels = data[self.key]
        meta = getattr(labels, "meta", None) or data["image"].meta
        source = str(meta.get("filename_or_obj") or data["image"].meta["filename_or_obj"])
        header = nib.load(source)
        labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
        labels = labels[0] if labels.ndim == 4 else labels
        if labels.shape != tuple(header.shape[:3]):
            raise RuntimeError(f"{source}: inverted prediction shape {labels.shape} != input {header.shape}")
        case = case_name(source)
        files = CaseFiles.of(self.output_dir, case)  # the names hipposeg segment gives a case's outputs
        prob_out = files.seg.with_name(f"{case}_prob.nii.gz")
        wanted = [path for path, asked in ((prob_out, self.save_probabilities),
                                           (files.uncertainty, self.save_uncertainty)) if asked]
        for path in [*segmentation_paths(files.seg), *wanted, files.row]:
            check_writable(path, self.overwrite)  # refuse before writing anything
        record = self._record(case, source, labels, header.affine, data.get(self.confidence_key))
        files.row.unlink(missing_ok=True)  # the case is unfinished until its row file is written again
        if not self.save_uncertainty:  # as in hipposeg segment: no map of an earlier run beside this mask
            files.uncertainty.unlink(missing_ok=True)
        write_segmentation(files.seg, labels, header.affine, self.label_names, overwrite=self.overwrite)
        if self.save_probabilities or self.save_uncertainty:
            prob = data[self.prob_key]
            prob = np.asarray(prob.detach().cpu() if hasattr(prob, "detach") else prob, dtype=np.float32)
            if self.save_probabilities:
                write_nifti(prob_out, np.moveaxis(prob, 0, -1), header.affine, overwrite=self.overwrite)
            if self.save_uncertainty:
                from hipposeg.confidence import uncertainty_map

                write_nifti(files.uncertainty, uncertainty_map(prob), header.affine, overwrite=self.overwrite)
        write_row_file(files, record)
        d = dict(data)
        d["seg_path"] = str(files.seg)
        return d

    def _record(self, case: str, source: str, labels, affine, confidence: dict | None) -> dict:
        """The row file's record of ``hipposeg segment`` for this case (:func:`hipposeg.batch.row_record`)."""
        from hipposeg.batch import row_record
        from hipposeg.data.manifest import sha256_of
        from hipposeg.segment import CROP_LABELS, case_row, confidence_qc, model_columns

        qc = confidence_qc({"": confidence})  # predicted_dice and the low_confidence flag, as segment writes them
        row = case_row(case, source, labels, affine, self.label_names or CROP_LABELS, qc,
                       model_columns(self.model, self.model_3d))
        return row_record(case, source, sha256_of(source), row)
