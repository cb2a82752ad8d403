"""A dataset of 2D/2.5D training slices cut once from preprocessed 3D volumes.

Each volume is loaded and preprocessed once (``volume_transforms``), cut by the non-empty-slice filter along
each configured axis, and the slices are kept in memory; every epoch only the random 2D augmentation runs.
With ``thick_slice_prob`` a share of the samples is cut afresh, on access, from the volume as acquired with thick
slices along a random axis (:func:`hipposeg.transforms.thicken_along_axis`): in plane that blurs one direction of
the slice, through the slice it makes the 2.5D neighbours near copies of the centre, as a thick-slice scan
resampled to 1 mm does. With ``volume_augmentation_prob`` another share is cut from the volume after a random
3D transform (``volume_augmentation``, e.g. a recipe of k-space motion, ghosting, spikes, bias field and noise):
acquisition problems live in the 3D volume, not in one slice, so they are simulated there. One transformed volume
serves ``volume_augmentation_reuse`` such samples before it is drawn again (a 3D transform costs tens of
milliseconds, a slice sample about one).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import apply_transform
from tqdm import tqdm

from hipposeg.transforms import IMAGE, LABEL, context_indices, cut_slices, thicken_along_axis, volume_transforms


class SliceDataset(Dataset):
    """Training slices of every case in ``data`` (a MONAI datalist of ``{"image", "label"}`` paths).

    Args:
        data: datalist of 3D cases.
        transform: random 2D transform applied to each slice sample on access (augmentation + padding).
        axes: slicing axes in RAS voxel order (0 sagittal, 1 coronal, 2 axial); slices of all are pooled.
        context: number of neighbouring slices as input channels (1 = 2D, 3 or 5 = 2.5D).
        empty_fraction: share of empty slices to keep, relative to the non-empty ones (0 = none).
        pixdim: target voxel size of the preprocessing (mm).
        seed: draws the empty slices, so a seed gives the same dataset.
        volume_transform: the deterministic 3D preprocessing; defaults to ``volume_transforms(pixdim=pixdim)``.
        thick_slice_prob: share of samples (drawn on each access) whose image is cut from the volume as acquired
            with thick slices along a random axis; 0 = off. The label stays the 1 mm truth.
        thick_slice_range: slice thickness range of that simulation, in voxels of ``pixdim``.
        volume_augmentation: a random 3D transform of ``{"image": (1, X, Y, Z) tensor}`` (the preprocessed,
            z-scored volume); the sample's image is cut from its output. The label stays the truth.
        volume_augmentation_prob: share of the samples not thickened (drawn on each access) cut that way.
        volume_augmentation_reuse: how many of those samples one transformed volume serves (per volume; 1 = a
            fresh transform for each).
    """

    def __init__(
        self,
        data: Sequence[dict],
        transform: Callable | None = None,
        axes: Sequence[int] = (0, 1, 2),
        context: int = 3,
        empty_fraction: float = 0.0,
        pixdim: Sequence[float] | None = (1.0, 1.0, 1.0),
        seed: int = 0,
        volume_transform: Callable | None = None,
        progress: bool = True,
        thick_slice_prob: float = 0.0,
        thick_slice_range: Sequence[float] = (1.3, 2.5),
        volume_augmentation: Callable | None = None,
        volume_augmentation_prob: float = 0.0,
        volume_augmentation_reuse: int = 1,
    ):
        volume_transform = volume_transform or volume_transforms(pixdim=pixdim)
        rng = np.random.default_rng(seed)
        samples, self._volumes = [], []
        for item in tqdm(list(data), desc="cutting slices", unit="case", disable=not progress, leave=False):
            vol = volume_transform(dict(item))
            image = np.asarray(vol[IMAGE])[0]
            label = np.asarray(vol[LABEL])[0]
            for axis in axes:
                for sample in cut_slices(image, label, int(axis), context, empty_fraction, rng):
                    sample["case"] = item.get("case", str(item[IMAGE]))
                    sample["volume_index"] = len(self._volumes)
                    samples.append(sample)
            if thick_slice_prob > 0 or (volume_augmentation is not None and volume_augmentation_prob > 0):
                self._volumes.append(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
        self.axes, self.context = tuple(axes), context
        self.thick_slice_prob = float(thick_slice_prob)
        self.thick_slice_range = (float(thick_slice_range[0]), float(thick_slice_range[1]))
        self.volume_augmentation = volume_augmentation
        self.volume_augmentation_prob = float(volume_augmentation_prob) if volume_augmentation is not None else 0.0
        self.volume_augmentation_reuse = max(1, int(volume_augmentation_reuse))
        self._augmented: dict[int, list] = {}  # volume index -> [transformed volume, samples it may still serve]
        super().__init__(data=samples, transform=transform)

    def _transform(self, index: int):
        sample = self.data[index]
        # torch's generator: seeded by the training's set_determinism, and per worker by the DataLoader
        if self.thick_slice_prob > 0 and float(torch.rand(())) < self.thick_slice_prob:
            sample = self.thick_slice_sample(sample)
        elif self.volume_augmentation_prob > 0 and float(torch.rand(())) < self.volume_augmentation_prob:
            sample = self.augmented_volume_sample(sample)
        return apply_transform(self.transform, sample) if self.transform is not None else sample

    def thick_slice_sample(self, sample: dict, axis: int | None = None, thickness: float | None = None,
                           phase: float | None = None) -> dict:
        """``sample`` with its image cut from its volume as acquired with ``thickness``-voxel slices along voxel
        ``axis``, the first starting ``phase`` voxels before the volume (random where not given)."""
        low, high = self.thick_slice_range
        axis = int(torch.randint(0, 3, ())) if axis is None else int(axis)
        thickness = low + (high - low) * float(torch.rand(())) if thickness is None else float(thickness)
        phase = thickness * float(torch.rand(())) if phase is None else float(phase)
        volume = thicken_along_axis(self._volumes[sample["volume_index"]][None], axis, thickness, phase)[0]
        return self._cut(sample, volume)

    def augmented_volume_sample(self, sample: dict) -> dict:
        """``sample`` with its image cut from its volume after :attr:`volume_augmentation` (a transformed volume
        drawn afresh once it has served :attr:`volume_augmentation_reuse` samples)."""
        index = int(sample["volume_index"])
        entry = self._augmented.get(index)
        if entry is None or entry[1] <= 0:
            volume = self._volumes[index][None].clone()
            out = apply_transform(self.volume_augmentation, {IMAGE: volume})[IMAGE]
            entry = self._augmented[index] = [
                torch.from_numpy(np.ascontiguousarray(np.asarray(out, dtype=np.float32)[0])),
                self.volume_augmentation_reuse]
        entry[1] -= 1
        return self._cut(sample, entry[0])

    def _cut(self, sample: dict, volume: torch.Tensor) -> dict:
        stack = volume.movedim(int(sample["slice_axis"]), 0)
        rows = context_indices(stack.shape[0], int(sample["slice_index"]), self.context)
        return {**sample, IMAGE: stack[rows].numpy().copy()}
