"""Whole-head path: Dice per side and seconds per scan on the three labelled full-head scans.

Run: ``python bench/fullhead.py [--predictor oracle|model|template] [--checkpoint F] [--partner F] [--moved 2]
[--thick 2] [--data-root DIR]``;
writes ``bench/results/fullhead.json`` (or ``--out``).

For every subject (and ``--moved`` copies of it, each moved by a random rigid transform of up to 20
degrees and 25 mm and resampled onto a grid of another orientation and voxel size, seeded; and ``--thick``
copies: the same scan acquired with thicker slices along anterior-posterior) it times the
whole path the CLI runs: read the NIfTI, register, crop, predict, map back, QC, write labels + QC json.
Dice per side merges anterior and posterior and compares with ``hippocampus_lr`` (1 left, 2 right); precision
and recall per side tell under-segmentation (high precision, low recall) from over-segmentation.
"template_region_dice" is the Dice of the template hippocampus region alone (an ellipsoid in MNI mm
mapped through the registration), a floor that any crop model must beat.

Predictors: ``oracle`` resamples the ground truth into each crop (checks registration, boxes, mirroring,
mapping back and sides end to end; its Dice is 1 minus the loss of two resamplings), ``template`` the
template region, ``model`` the shipped bundle's crop model (``hipposeg.segmenter.load_segmenter``; with
``--checkpoint``, that checkpoint alone; ``--partner`` averages a 3D network with it; neither: the shipped
default, ``models/model.pt`` + ``models/model_3d.pt``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from markdown_block import replace_block  # noqa: E402  (bench/ is the script's folder)
from repo_paths import shown  # noqa: E402

SUBJECTS = ("colin27", "candi030", "bert")
DEFAULT_OUT = Path(__file__).parent / "results" / "fullhead.json"
README = Path(__file__).parent / "README.md"
HIRES_OUT = Path(__file__).parent / "results" / "fullhead_hires.json"
# shipped model name -> (results JSON, bench/README.md block) of its official run
SHIPPED_TABLES = {"default": (DEFAULT_OUT, "fullhead-table"), "hires": (HIRES_OUT, "fullhead-table-hires")}


def write_table(result: dict, block: str = "fullhead-table") -> None:
    """Write the per-scan table between the ``block`` markers of bench/README.md (runs of a shipped model only)."""
    lines = [f"`{result['command']}` ({result['checkpoint']}, {result['cpu_count']} CPU cores):", "",
             "| scan | copy | input | Dice left | Dice right | precision / recall left | precision / recall right | "
             "seconds |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        grid = f"{r['input']['orientation']} {'x'.join(f'{v:.2g}' for v in r['input']['spacing'])} mm"
        pr = {side: f"{v['precision']:.2f} / {v['recall']:.2f}" for side, v in r["precision_recall"].items()}
        lines.append(f"| {r['subject']} | {r['variant']} | {grid} | {r['dice']['left']:.3f} | "
                     f"{r['dice']['right']:.3f} | {pr['left']} | {pr['right']} | {r['seconds']:.2f} |")
    replace_block(README, block, "\n".join(lines))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictor", choices=("oracle", "model", "template"), default="oracle")
    parser.add_argument("--moved", type=int, default=2, help="moved + regridded copies per subject")
    parser.add_argument("--thick", type=float, nargs="*", default=[2.0],
                        help="thick-slice copies: anterior-posterior slice thickness in mm (none: --thick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="model predictor: this .pt instead of the shipped model")
    parser.add_argument("--partner", default=None, help="model predictor: average with this 3D partner checkpoint, "
                        "e.g. bundles/hipposeg/models/model_3d.pt (the shipped ensemble)")
    parser.add_argument("--data-root", default=None, help="default: hipposeg's data-root resolution")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)

    import SimpleITK as sitk

    from hipposeg.data.readers import read_image
    from hipposeg.data.writers import write_nifti
    from hipposeg.fullhead.evaluation import (
        dice_per_side,
        overlap_per_side,
        left_is_left,
        move_and_regrid,
        oracle_predictor,
        template_predictor,
        thicken_slices,
    )
    from hipposeg.fullhead.pipeline import segment_full_head, write_result
    from hipposeg.fullhead.registration import N_THREADS, template_pyramid

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(N_THREADS)
    t = time.perf_counter()
    from hipposeg.data.manifest import resolve_data_root

    args.data_root = str(resolve_data_root(args.data_root))
    read_image(Path(args.data_root) / "fullhead" / SUBJECTS[0] / "hippocampus_lr.nii.gz")  # MONAI import
    template_pyramid()
    warmup_s = time.perf_counter() - t
    model = segmenter = None
    if args.predictor == "model":
        from hipposeg.segmenter import load_segmenter

        segmenter = load_segmenter(checkpoint=args.checkpoint,
                                   overrides={"partner_ckpt_path": args.partner} if args.partner else None)
        model = segmenter.predict_probabilities

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for subject in SUBJECTS:
            folder = Path(args.data_root) / "fullhead" / subject
            image = read_image(folder / "t1.nii.gz")
            truth = read_image(folder / "hippocampus_lr.nii.gz")
            rng = np.random.default_rng([args.seed, SUBJECTS.index(subject)])
            variants = [("original", folder / "t1.nii.gz", image, truth, {})]
            for k in range(args.moved):
                moved, moved_truth, info = move_and_regrid(image, truth, rng)
                path = tmp / f"{subject}_moved{k}.nii.gz"
                write_nifti(path, moved.array, moved.affine, overwrite=True)
                info = {key: v for key, v in info.items() if key != "move_ras"}
                variants.append((f"moved{k}", path, moved, moved_truth, info))
            for mm in args.thick:
                thick, thick_truth, info = thicken_slices(image, truth, mm)
                path = tmp / f"{subject}_thick{mm:g}.nii.gz"
                write_nifti(path, thick.array, thick.affine, overwrite=True)
                variants.append((f"thick{mm:g}mm", path, thick, thick_truth, info))
            for name, path, _, ref, info in variants:
                predictor = {"oracle": oracle_predictor(ref), "template": template_predictor}.get(args.predictor, model)
                t0 = time.perf_counter()
                scan = read_image(path)
                t_read = time.perf_counter()
                result = segment_full_head(scan, predictor)
                t_seg = time.perf_counter()
                write_result(result, tmp / f"{subject}_{name}_seg.nii.gz", overwrite=True)
                t_write = time.perf_counter()
                tmpl = segment_full_head(scan, template_predictor, registration=result.registration)
                dice = dice_per_side(result.labels, ref.array)
                row = {
                    "subject": subject,
                    "variant": name,
                    **info,
                    "input": {"shape": list(scan.shape), "spacing": [round(s, 3) for s in scan.spacing],
                              "orientation": scan.orientation},
                    "dice": {k: round(v, 4) for k, v in dice.items()},
                    "precision_recall": {side: {k: round(v, 4) for k, v in pr.items()}
                                         for side, pr in overlap_per_side(result.labels, ref.array).items()},
                    "template_region_dice": {k: round(v, 4) for k, v in dice_per_side(tmpl.labels, ref.array).items()},
                    "left_on_left": left_is_left(result.labels, scan.affine, ref),
                    "seconds": round(t_write - t0, 3),
                    "seconds_read": round(t_read - t0, 3),
                    "seconds_write": round(t_write - t_seg, 3),
                    "timings": {k: round(v, 3) for k, v in result.timings.items()},
                    "registration_metric": round(result.qc["registration_metric"], 4),
                    "qc_flags": result.qc["flags"],
                }
                rows.append(row)
                print(
                    f"{subject:9s} {name:8s} {scan.orientation} {'x'.join(f'{s:.2g}' for s in scan.spacing):12s} "
                    f"dice L {dice['left']:.3f} R {dice['right']:.3f}  "
                    f"precision/recall L {row['precision_recall']['left']['precision']:.2f}/"
                    f"{row['precision_recall']['left']['recall']:.2f} R {row['precision_recall']['right']['precision']:.2f}/"
                    f"{row['precision_recall']['right']['recall']:.2f}  template L {row['template_region_dice']['left']:.3f} "
                    f"R {row['template_region_dice']['right']:.3f}  left-on-left {row['left_on_left']}  "
                    f"{row['seconds']:.2f} s (registration {result.timings['registration_s']:.2f}, "
                    f"predict {result.timings['predict_s']:.2f})  metric {row['registration_metric']:.3f} "
                    f"flags {len(row['qc_flags'])}",
                    flush=True,
                )

    def summary(selected):
        d = [min(r["dice"].values()) for r in selected]
        s = [r["seconds"] for r in selected]
        return {"n": len(selected), "min_dice": round(min(d), 4), "mean_dice": round(float(np.mean(d)), 4),
                "max_seconds": round(max(s), 3), "mean_seconds": round(float(np.mean(s)), 3)}

    originals = [r for r in rows if r["variant"] == "original"]
    moved = [r for r in rows if r["variant"].startswith("moved")]
    thick = [r for r in rows if r["variant"].startswith("thick")]
    by_subject = {}
    for r in moved:
        orig = next(o for o in originals if o["subject"] == r["subject"])
        diff = max(abs(r["dice"][s] - orig["dice"][s]) for s in ("left", "right"))
        by_subject.setdefault(r["subject"], []).append(round(diff, 4))
    result = {
        "predictor": args.predictor,
        "checkpoint": args.checkpoint or ("shipped default bundles/hipposeg/models/model.pt" if model else None),
        "partner_checkpoint": shown(segmenter.partner_checkpoint) if segmenter and segmenter.partner_checkpoint
        else None,  # the partner the segmenter loaded (a bundle folder given to --checkpoint brings its own)
        "command": "python bench/fullhead.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "threads": N_THREADS,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "warmup_seconds_imports_and_template": round(warmup_s, 3),
        "original": summary(originals),
        "moved": summary(moved) if moved else None,
        "moved_minus_original_max_abs_dice": by_subject,
        "thick_slices": summary(thick) if thick else None,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.predictor == "model":  # a shipped model's run to its usual output refreshes its README table
        from hipposeg.bundle import shipped_model, shipped_partner

        checkpoint = Path(segmenter.checkpoint)
        partner = segmenter.partner_checkpoint and Path(segmenter.partner_checkpoint)
        for name, (out, block) in SHIPPED_TABLES.items():
            shipped = shipped_partner(name)
            if (checkpoint == shipped_model(name).resolve() and partner == (shipped and shipped.resolve())
                    and Path(args.out).resolve() == out.resolve()):
                write_table(result, block)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return result


if __name__ == "__main__":
    main()
