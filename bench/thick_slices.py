"""Thick slices: how much whole-hippocampus Dice a crop loses when it is acquired with 1.6 or 2.0 mm slices.

Run: ``python bench/thick_slices.py [--thickness 1.6 2.0] [--axes 0 1 2] [--max-cases N] [--checkpoint FILE]
[--partner FILE] [--phase MM]``;
writes ``bench/results/thick_slices.json`` (or ``--out``); a full run saved in ``bench/results/`` refreshes the
table between the ``thick-slices-table`` markers of ``bench/README.md`` (one row per ``thick_slices*.json`` there).

Cases: the 42 fold-0 validation crops of Task04 (``datalist("msd_hippocampus", "val", 0)``, 1 mm voxels).
For each case, slice thickness T and voxel axis A, the crop is "re-acquired" with slices T mm thick along A (the
other two axes keep 1 mm) by the one thick-slice simulation of hipposeg, the one training uses
(:func:`hipposeg.transforms.thick_slice_grid`): a box slice profile, each thick slice the MEAN of the 1 mm image over
its thickness, not a sample of it, kept on the thick grid. The first thick slice starts a random whole number of
0.1 mm steps, 0-0.9 mm, inside the crop (drawn per case, thickness and axis, seeded: scanners do not align their
slices to anyone's 1 mm grid); a remainder shorter than T at the far end is not acquired.

The reference is the label resampled the same way: the share of each thick voxel that is hippocampus (labels 1
and 2) is box-averaged like the image, and the thick voxel is hippocampus where that share is over one half.
(Sampling the label at the thick voxel centres by nearest neighbour instead picks one of the two 1 mm voxels a
2 mm slice straddles: that reference is half a voxel off, and on its own costs a perfect thick-grid mask 0.07-0.09
Dice at 2 mm. Earlier figures of this bench used it.)

The model (``hipposeg.segmenter.load_segmenter()``: the shipped default, or ``--checkpoint`` / ``--partner``)
segments the 1 mm crop and each thick copy through its public door (``Segmenter.segment(Image)``; the thick copy
is resampled to 1 mm by the bundle's preprocessing and its mask comes back on the thick grid). Scores, whole
hippocampus (labels 1 and 2 merged), all on the thick grid:

* ``dice_thick``: the thick copy's mask against the reference;
* ``dice_1mm``: the 1 mm crop's mask, resampled onto the thick grid like the label (box share over one half),
  against the reference: the same case, reference and grid, so
* ``loss = dice_1mm - dice_thick`` is the Dice the thick acquisition alone costs (target: mean <= 0.02);
* ``agreement``: Dice of the thick copy's mask against the 1 mm crop's mask on the thick grid.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import replace_block, shown, write_result  # noqa: E402  (bench/ is the script's folder)

DEFAULT_OUT = Path(__file__).parent / "results" / "thick_slices.json"
README = Path(__file__).parent / "README.md"
TABLE_BLOCK = "thick-slices-table"
PHASE_STEPS_PER_VOXEL = 10  # the first slice starts a whole number of 0.1 mm steps inside the crop


def thick_copy(image, *, axis: int, thickness_mm: float, phase_steps: int = 0):
    """``image`` (:class:`hipposeg.data.readers.Image`) as acquired with ``thickness_mm`` slices along voxel
    ``axis``, the first starting ``phase_steps`` steps of 0.1 voxel inside the image: each thick voxel the mean of
    the image over its extent (float32, on the thick grid; :func:`hipposeg.transforms.thick_slice_grid`)."""
    from hipposeg.data.readers import Image
    from hipposeg.transforms import thick_slice_grid

    if not 0 <= phase_steps < PHASE_STEPS_PER_VOXEL:
        raise ValueError(f"phase_steps must be 0-{PHASE_STEPS_PER_VOXEL - 1}, not {phase_steps}")
    thickness = thickness_mm / float(image.spacing[axis])  # in voxels
    inside = phase_steps / PHASE_STEPS_PER_VOXEL
    # thick_slice_grid's phase: how far the first slice starts BEFORE the image; the slice that would start there
    # lies partly outside and is not acquired, so the first acquired slice starts `inside` voxels into the image
    array, affine = thick_slice_grid(np.asarray(image.array, dtype=np.float32), image.affine, axis, thickness,
                                     phase=(thickness - inside) % thickness)
    return Image(array, affine, path=f"{image.path}#thick{thickness_mm:g}ax{axis}", source="nifti")


def thick_mask(mask, source, *, axis: int, thickness_mm: float, phase_steps: int = 0) -> np.ndarray:
    """A binary ``mask`` on ``source``'s 1 mm grid resampled onto the thick grid the same way as the image (box
    average along ``axis``): true where over half of the thick voxel is inside the mask."""
    from hipposeg.data.readers import Image

    share = thick_copy(Image(np.asarray(mask, np.float32), source.affine, path=str(source.path)), axis=axis,
                       thickness_mm=thickness_mm, phase_steps=phase_steps)
    return share.array > 0.5


def score_case(segmenter, item: dict, *, thicknesses, axes, rng: np.random.Generator,
               phase_steps: int | None = None) -> dict:
    """Per-case row: the 1 mm Dice and, per thickness and axis, the four scores of the module docstring. The slice
    phase is drawn from ``rng`` unless ``phase_steps`` fixes it."""
    from hipposeg.data.readers import read_image
    from hipposeg.metrics import dice

    image, label = read_image(item["image"]), read_image(item["label"])
    t0 = time.perf_counter()
    base = segmenter.segment(image).labels > 0
    truth_1mm = label.array > 0
    row = {"case": item["case"], "dice_1mm_native": round(dice(base, truth_1mm), 4),
           "seconds_1mm": round(time.perf_counter() - t0, 3), "thick": []}
    for thickness in thicknesses:
        for axis in axes:
            drawn = int(rng.integers(PHASE_STEPS_PER_VOXEL))  # drawn even when fixed: the other draws stay the same
            grid = {"axis": axis, "thickness_mm": thickness, "phase_steps": drawn if phase_steps is None else phase_steps}
            thick = thick_copy(image, **grid)
            pred = segmenter.segment(thick).labels > 0
            truth = thick_mask(truth_1mm, label, **grid)
            base_on_thick = thick_mask(base, image, **grid)
            d_thick, d_1mm = dice(pred, truth), dice(base_on_thick, truth)
            row["thick"].append({"thickness_mm": thickness, "axis": axis, "phase_mm": grid["phase_steps"] / 10,
                                 "shape": list(thick.shape), "dice_thick": round(d_thick, 4),
                                 "dice_1mm": round(d_1mm, 4), "loss": round(d_1mm - d_thick, 4),
                                 "agreement": round(dice(pred, base_on_thick), 4)})
    return row


def summarise(rows: list[dict], *, thicknesses, axes) -> list[dict]:
    """Mean (and worst) scores over cases per (thickness, axis)."""
    out = []
    for thickness in thicknesses:
        for axis in axes:
            cells = [c for r in rows for c in r["thick"] if c["thickness_mm"] == thickness and c["axis"] == axis]
            mean = {k: round(float(np.mean([c[k] for c in cells])), 4)
                    for k in ("dice_thick", "dice_1mm", "loss", "agreement")}
            out.append({"thickness_mm": thickness, "axis": axis, "n": len(cells), **{f"mean_{k}": v for k, v in
                        mean.items()}, "max_loss": round(max(c["loss"] for c in cells), 4)})
    return out


CURRENT_PROFILE = "hipposeg.transforms.thick_slice_grid"  # named in the "profile" of every run since the change


def build_table(results_dir: Path = DEFAULT_OUT.parent) -> str | None:
    """The README table from every full run (all 42 cases, 1.6 and 2.0 mm, three axes) saved in ``results_dir`` as
    ``thick_slices*.json``: one row per model, the mean Dice loss per thickness and axis (None: no full run). A run
    made before the thick copies came from :func:`hipposeg.transforms.thick_slice_grid` is marked: it used a
    SimpleITK copy of the same box profile (nearest neighbour to 0.1 mm, then ``BinShrink``), equal to it within
    1e-7 of the intensities."""
    settings = [(t, a) for t in (1.6, 2.0) for a in (0, 1, 2)]
    runs = []
    for path in sorted(results_dir.glob("thick_slices*.json")):
        result = json.loads(path.read_text())
        cells = {(c["thickness_mm"], c["axis"]): c for c in result["summary"]}
        if result["n_cases"] == 42 and result.get("phase_mm") is None and all(s in cells for s in settings):
            runs.append((result, [cells[s] for s in settings]))
    if not runs:
        return None
    head = [f"{t:g} mm, axis {a}" for t, a in settings]
    lines = ["Mean whole-hippocampus Dice loss of the thick copy against the 1 mm crop (same case, reference and grid; "
             "target <= 0.02), 42 fold-0 crops; worst case in brackets:", "",
             "| model | command | 1 mm Dice | " + " | ".join(head) + " | mean |",
             "|---|---|---|" + "---|" * (len(head) + 1)]
    earlier = False
    for result, losses in runs:
        model = result["checkpoint"] + (f" + {result['partner_checkpoint']}" if result.get("partner_checkpoint") else "")
        mark = "" if CURRENT_PROFILE in result.get("profile", "") else " †"
        earlier = earlier or bool(mark)
        one_mm = float(np.mean([r["dice_1mm_native"] for r in result["rows"]]))
        lines.append(f"| {model} ({result['date'][:10]}){mark} | `{result['command']}` | {one_mm:.3f} | "
                     + " | ".join(f"{c['mean_loss']:+.3f} ({c['max_loss']:+.2f})" for c in losses)
                     + f" | {np.mean([c['mean_loss'] for c in losses]):+.3f} |")
    if earlier:
        lines += ["", "† not re-run since the thick copies come from the training's simulation "
                      "(`hipposeg.transforms.thick_slice_grid`): measured with a SimpleITK copy of the same box profile "
                      "(nearest neighbour to 0.1 mm, then `BinShrink`), whose intensities equal it within 1e-7."]
    return "\n".join(lines)


def write_table(results_dir: Path = DEFAULT_OUT.parent) -> bool:
    """Rebuild the table between the ``thick-slices-table`` markers of bench/README.md (:func:`build_table`)."""
    table = build_table(results_dir)
    return table is not None and replace_block(README, TABLE_BLOCK, table)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thickness", type=float, nargs="+", default=[1.6, 2.0], help="slice thicknesses, mm")
    parser.add_argument("--axes", type=int, nargs="+", default=[0, 1, 2], choices=(0, 1, 2))
    parser.add_argument("--max-cases", type=int, default=None, help="the first N fold-0 cases (a quick check)")
    parser.add_argument("--checkpoint", default=None, help="another model file (.pt) or bundle folder")
    parser.add_argument("--partner", default=None,
                        help="a 3D partner checkpoint averaged with the model (hipposeg.ensemble), e.g. "
                             "bundles/hipposeg/models/model_3d.pt")
    parser.add_argument("--partner-weight", type=float, default=None,
                        help="the ensemble's partner weight (inference.json's partner_weight, 0.5)")
    parser.add_argument("--data-root", default=None, help="default: hipposeg's data-root resolution")
    parser.add_argument("--seed", type=int, default=0, help="draws the slice phases")
    parser.add_argument("--phase", type=float, default=None, metavar="MM",
                        help="start every first slice this far inside the crop (0-0.9 mm in 0.1 mm steps) instead of "
                             "a drawn phase; such runs are left out of the README table")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    phase_steps = None
    if args.phase is not None:
        phase_steps = round(args.phase * PHASE_STEPS_PER_VOXEL)
        if not (0 <= phase_steps < PHASE_STEPS_PER_VOXEL
                and abs(args.phase * PHASE_STEPS_PER_VOXEL - phase_steps) < 1e-6):
            parser.error(f"--phase must be one of 0, 0.1, ..., 0.9 mm, not {args.phase:g}")

    from hipposeg.data.manifest import load_manifest
    from hipposeg.segmenter import load_segmenter

    items = load_manifest().datalist("msd_hippocampus", "val", 0, args.data_root, max_cases=args.max_cases)
    overrides = {} if args.partner_weight is None else {"partner_weight": args.partner_weight}
    segmenter = load_segmenter(args.checkpoint, partner=args.partner, overrides=overrides)
    rows, rng = [], np.random.default_rng(args.seed)
    for n, item in enumerate(items, 1):
        rows.append(score_case(segmenter, item, thicknesses=args.thickness, axes=args.axes, rng=rng,
                               phase_steps=phase_steps))
        worst = max(rows[-1]["thick"], key=lambda c: c["loss"])
        print(f"[{n}/{len(items)}] {item['case']}: 1 mm {rows[-1]['dice_1mm_native']:.3f}, worst loss "
              f"{worst['loss']:+.3f} ({worst['thickness_mm']:g} mm, axis {worst['axis']})", flush=True)
    result = {
        "command": "python bench/thick_slices.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "checkpoint": shown(segmenter.checkpoint),
        "partner_checkpoint": shown(segmenter.partner_checkpoint) if segmenter.partner_checkpoint else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "n_cases": len(rows),
        "phase_mm": args.phase,  # None: drawn per case, thickness and axis (seeded)
        "profile": f"box: mean of the 1 mm image over each slice thickness ({CURRENT_PROFILE}, the training's "
                   "simulation), first slice 0-0.9 mm inside the crop (seeded); reference: the label's box share > 0.5",
        "summary": summarise(rows, thicknesses=args.thickness, axes=args.axes),
        "rows": rows,
    }
    out = write_result(args.out, result)
    if args.max_cases is None and out.parent.resolve() == DEFAULT_OUT.parent.resolve():
        write_table()  # a full run saved among the bench results refreshes the README table
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return result


if __name__ == "__main__":
    main()
