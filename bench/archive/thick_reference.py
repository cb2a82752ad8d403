"""Which reference a thick-slice copy of a crop should be scored against (a check behind ``thick_slices.py``).

Run: ``python bench/archive/thick_reference.py`` (about a minute); writes ``bench/archive/thick_reference.json`` (a frozen
one-off, kept beside its script).

For the 42 fold-0 crops, 1.6 and 2.0 mm slices along each axis, first slice at the crop's edge (phase 0, where the
two references differ most): the 1 mm truth carried onto the thick grid the way the bundle's ``Invertd`` carries a
prediction (linear interpolation of the foreground, over one half) is scored against

* ``centre``: the label sampled at the thick voxel centres (nearest neighbour; the bench's first reference), and
* ``box``: the label resampled the same way as the image (box share over one half; the bench's reference now).

A perfect segmentation scores 1 against a fair reference; what it loses against ``centre`` is the offset of
that reference alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thick_slices import thick_copy, thick_mask  # noqa: E402  (bench/, the folder above)

OUT = Path(__file__).parent / "thick_reference.json"


def main() -> dict:
    import SimpleITK as sitk

    from hipposeg.data.manifest import load_manifest
    from hipposeg.data.readers import Image, image_to_sitk, read_image
    from hipposeg.metrics import dice

    cells: dict[str, list] = {}
    for item in load_manifest().datalist("msd_hippocampus", "val", 0, None):
        image, label = read_image(item["image"]), read_image(item["label"])
        truth = (label.array > 0).astype(np.float32)
        for thickness in (1.6, 2.0):
            for axis in (0, 1, 2):
                grid = image_to_sitk(thick_copy(image, axis=axis, thickness_mm=thickness))
                moving = image_to_sitk(Image(truth, label.affine))
                linear = sitk.Resample(moving, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
                carried = sitk.GetArrayFromImage(linear).transpose(2, 1, 0) > 0.5
                nearest = sitk.Resample(moving, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0,
                                        sitk.sitkFloat32)
                centre = sitk.GetArrayFromImage(nearest).transpose(2, 1, 0) > 0.5
                box = thick_mask(truth, label, axis=axis, thickness_mm=thickness)
                cells.setdefault(f"{thickness:g} mm, axis {axis}", []).append(
                    (dice(carried, centre), dice(carried, box)))
    result = {"command": "python bench/archive/thick_reference.py", "n_cases": 42,
              "mean_dice_of_the_carried_truth": {k: {"centre": round(float(np.mean([c[0] for c in v])), 4),
                                                     "box": round(float(np.mean([c[1] for c in v])), 4)}
                                                 for k, v in cells.items()}}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
