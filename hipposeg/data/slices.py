"""A dataset of 2D/2.5D training slices cut once from preprocessed 3D volumes.

Each volume is loaded and preprocessed once (``volume_transforms``), cut by the non-empty-slice filter along
each configured axis, and the slices are kept in memory; every epoch only the random 2D augmentation runs.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from monai.data import Dataset
from tqdm import tqdm

from hipposeg.transforms import IMAGE, LABEL, cut_slices, volume_transforms


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
    ):
        volume_transform = volume_transform or volume_transforms(pixdim=pixdim)
        rng = np.random.default_rng(seed)
        samples = []
        for item in tqdm(list(data), desc="cutting slices", unit="case", disable=not progress, leave=False):
            vol = volume_transform(dict(item))
            image = np.asarray(vol[IMAGE])[0]
            label = np.asarray(vol[LABEL])[0]
            for axis in axes:
                for sample in cut_slices(image, label, int(axis), context, empty_fraction, rng):
                    sample["case"] = item.get("case", str(item[IMAGE]))
                    samples.append(sample)
        self.axes, self.context = tuple(axes), context
        super().__init__(data=samples, transform=transform)
