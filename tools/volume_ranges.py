"""Measure the reference hippocampus volume range behind the ``volume_out_of_range`` QC flag.

    python tools/volume_ranges.py --labels '<data root>/msd_hippocampus/labelsTr/*.nii.gz' \
        --dataset msd_hippocampus --overwrite

reads every label file of the glob (each must hold ONE hippocampus, as the MSD crops do), measures the volume
of its foreground, and stores the range under ``datasets.<dataset>`` of ``hipposeg/resources/volume_ranges.json``
(or ``-o``), which :func:`hipposeg.volumes.reference_volume_ranges` reads. Other datasets in the file are kept.
"""

from __future__ import annotations

import argparse
import glob
import json
import shlex
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from hipposeg.data.writers import write_text
from hipposeg.errors import HippoSegError, InputError
from hipposeg.volumes import VOLUME_RANGES_FILE, voxel_volume_mm3

ABOUT = ("Reference hippocampus volumes (mm3) for the volume_out_of_range QC flag (hipposeg/volumes.py); "
         "rebuilt by tools/volume_ranges.py")
APPLIES_TO = "one hippocampus: the total of a one-sided label map, or each side of a left/right one"


def compute_reference_ranges(
    label_paths: Iterable[str | Path], low_factor: float = 0.5, high_factor: float = 1.5
) -> dict:
    """The range of whole-hippocampus volume (all foreground labels of a file) over ``label_paths``.

    Each file must hold ONE hippocampus (as the MSD crops do). Returns plain numbers: ``n_cases``,
    ``min``, ``max``, ``median``, ``p1``, ``p99`` (mm3) and the thresholds ``low = low_factor * min``,
    ``high = high_factor * max``.
    """
    import nibabel as nib

    volumes = []
    for path in sorted(str(p) for p in label_paths):
        try:
            img = nib.load(path)
            data = np.asarray(img.dataobj)
        except Exception as exc:  # not NIfTI, truncated, unreadable
            raise InputError(path, f"cannot read this label file ({type(exc).__name__}: {exc})") from None
        volumes.append(int(np.count_nonzero(data)) * voxel_volume_mm3(img.affine))
    if not volumes:
        raise InputError(None, "no label files given to compute reference volume ranges from")
    v = np.asarray(volumes, dtype=np.float64)
    return {
        "unit": "mm3",
        "n_cases": int(v.size),
        "min": round(float(v.min()), 3),
        "max": round(float(v.max()), 3),
        "median": round(float(np.median(v)), 3),
        "p1": round(float(np.percentile(v, 1)), 3),
        "p99": round(float(np.percentile(v, 99)), 3),
        "low_factor": low_factor,
        "high_factor": high_factor,
        "low": round(low_factor * float(v.min()), 3),
        "high": round(high_factor * float(v.max()), 3),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python tools/volume_ranges.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", required=True, help="glob of label files, each with ONE hippocampus")
    parser.add_argument("--dataset", default="msd_hippocampus", help="manifest dataset name to store it under")
    parser.add_argument("-o", "--output", default=str(VOLUME_RANGES_FILE), help="ranges JSON to update")
    parser.add_argument("--low-factor", type=float, default=0.5, help="low = this x the smallest volume")
    parser.add_argument("--high-factor", type=float, default=1.5, help="high = this x the largest volume")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file")
    return parser


def _stored(output: Path) -> dict:
    """The ranges file as it is (to keep its other datasets), or an empty one."""
    if not output.exists():
        return {"about": ABOUT, "datasets": {}}
    try:
        stored = json.loads(output.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(output, f"not valid JSON ({exc})") from None
    stored["about"] = ABOUT
    return stored


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        output = Path(args.output)
        stored = _stored(output)
        ranges = compute_reference_ranges(glob.glob(args.labels), args.low_factor, args.high_factor)
        ranges["applies_to"] = APPLIES_TO
        ranges["how"] = (
            f"volume of all foreground voxels (voxel count x |det(affine[:3,:3])|) of each of the {ranges['n_cases']} "
            f"training label files of {args.dataset} (one hippocampus per file); low = {args.low_factor} x min, "
            f"high = {args.high_factor} x max"
        )
        ranges["command"] = "python tools/volume_ranges.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        stored.setdefault("datasets", {})[args.dataset] = ranges
        write_text(output, json.dumps(stored, indent=1) + "\n", overwrite=args.overwrite)
    except (HippoSegError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(ranges, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
