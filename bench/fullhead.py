"""Whole-head path: Dice per side and seconds per scan on the three labelled full-head scans.

Run: ``python bench/fullhead.py [--predictor oracle|model|template] [--model NAME|FILE] [--partner F] [--moved 2]
[--thick 2] [--runtime R] [--cli-runs 3] [--baseline CHECKOUT] [--data-root DIR]``;
writes ``bench/results/fullhead.json`` (or ``--out``).

For every subject (and ``--moved`` copies of it, each moved by a random rigid transform of up to 20
degrees and 25 mm and resampled onto a grid of another orientation and voxel size, seeded; and ``--thick``
copies: the same scan acquired with thicker slices along anterior-posterior) it times what ``hipposeg segment
--full-head`` runs, :func:`hipposeg.segment.segment_inputs` on that one file with the segmenter loaded once:
read, check, register, T1 check, crop, predict, map back, QC, intracranial volume, volume row, mask, QC picture,
row file and volume tables (after one untimed warm-up scan, which pays the imports and the template pyramid).
Dice per side merges anterior and posterior and compares with ``hippocampus_lr`` (1 left, 2 right); precision
and recall per side tell under-segmentation (high precision, low recall) from over-segmentation.
"template_region_dice" is the Dice of the template hippocampus region alone (an ellipsoid in MNI mm
mapped through the registration), a floor that any crop model must beat.

Predictors: ``oracle`` resamples the ground truth into each crop (checks registration, boxes, mirroring,
mapping back and sides end to end; its Dice is 1 minus the loss of two resamplings), ``template`` the
template region, ``model`` a crop model loaded by ``hipposeg.segmenter.load_segmenter`` (``--model`` as
``hipposeg segment --model`` takes it: a shipped name, a bundle folder, or a checkpoint file run alone unless
``--partner`` names a 3D network to average with it; neither: the shipped default, ``models/model.pt`` +
``models/model_3d.pt``). The result records the networks the segmenter loaded, the runtime that ran them
(``--runtime``, as ``hipposeg segment --runtime``) and the machine.

With the model predictor and ``--cli-runs N`` it also times the real CLI (``bench/cli_timing.py``): ``hipposeg
segment --full-head`` of the three original scans with ``--no-qc`` (eTIV included) in N fresh processes after a
warm-up: the per-scan median the CLI prints and the process's wall seconds; with ``--baseline`` (a checkout of an
older version, e.g. a ``git worktree`` of 0.6.1) the same command there, alternately, and the pairwise speed-up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import describe_machine, machine, provenance, replace_block, runtime_label, this_command, time_cli, \
    write_result

SUBJECTS = ("colin27", "candi030", "bert")
DEFAULT_OUT = Path(__file__).parent / "results" / "fullhead.json"
README = Path(__file__).parent / "README.md"
HIRES_OUT = Path(__file__).parent / "results" / "fullhead_hires.json"
# shipped model name -> (results JSON, bench/README.md block) of its official run
SHIPPED_TABLES = {"default": (DEFAULT_OUT, "fullhead-table"), "hires": (HIRES_OUT, "fullhead-table-hires")}


class PredictorSegmenter:
    """A crop predictor (``Image -> probabilities``) in the shape :func:`hipposeg.segment.segment_inputs` takes: its
    whole-head path calls ``predict_probabilities`` of the segmenter; no weights file names the mask."""

    checkpoint = partner_checkpoint = None

    def __init__(self, predict):
        self.predict_probabilities = predict


def build_table(result: dict) -> str:
    """The per-scan table of one run: Dice, precision / recall per side and seconds per scan."""
    model = result["model"] + (f" + {result['model_3d']}" if result.get("model_3d") else "")
    lines = [f"`{result['command']}` ({model}; {describe_machine(result['machine'])}):", "",
             "| scan | copy | input | Dice left | Dice right | precision / recall left | precision / recall right | "
             "seconds |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        grid = f"{r['input']['orientation']} {'x'.join(f'{v:.2g}' for v in r['input']['spacing'])} mm"
        pr = {side: f"{v['precision']:.2f} / {v['recall']:.2f}" for side, v in r["precision_recall"].items()}
        lines.append(f"| {r['subject']} | {r['variant']} | {grid} | {r['dice']['left']:.3f} | "
                     f"{r['dice']['right']:.3f} | {pr['left']} | {pr['right']} | {r['seconds']:.2f} |")
    lines.append("")
    lines.append(f"Runtime: {result.get('runtime') or 'torch'}; seconds: `segment_inputs` in-process, model loaded once.")
    cli = result.get("cli")
    if cli:
        text = (f"Through the CLI (`hipposeg segment --full-head` of the {cli['n_inputs']} original scans, `--no-qc`, eTIV "
                f"included; median of {cli['runs']} fresh processes): {cli['per_case_s']:.2f} s per scan as the CLI "
                f"prints it, {cli['wall_s']:.1f} s process wall ({cli['wall_per_input_s']:.2f} s per scan with the "
                f"start-up)")
        if cli.get("baseline"):
            b = cli["baseline"]
            text += (f"; {cli.get('baseline_checkout')} back to back: {b['per_case_s']:.2f} s per scan, "
                     f"{b['wall_s']:.1f} s wall; speed-up {cli['speed_up_per_case']:.2f}x per scan, "
                     f"{cli['speed_up_wall']:.2f}x wall")
        lines.append(text + ".")
    return "\n".join(lines)


def write_table(result: dict, block: str = "fullhead-table") -> None:
    """Write the per-scan table between the ``block`` markers of bench/README.md (runs of a shipped model only)."""
    replace_block(README, block, build_table(result))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictor", choices=("oracle", "model", "template"), default="oracle")
    parser.add_argument("--moved", type=int, default=2, help="moved + regridded copies per subject")
    parser.add_argument("--thick", type=float, nargs="*", default=[2.0],
                        help="thick-slice copies: anterior-posterior slice thickness in mm (none: --thick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", "--checkpoint", dest="model", default=None,
                        help="model predictor: what hipposeg segment --model takes (a shipped name, a bundle folder, "
                             "a checkpoint file run alone); default: the shipped default")
    parser.add_argument("--partner", default=None, help="model predictor: average --model with this 3D partner "
                        "checkpoint (hipposeg segment has no --partner, so it needs --cli-runs 0)")
    parser.add_argument("--runtime", default="auto", help="model predictor: hipposeg segment --runtime")
    parser.add_argument("--cli-runs", type=int, default=3, help="model predictor: fresh hipposeg segment --full-head "
                                                                "processes to time (0: none)")
    parser.add_argument("--baseline", help="a checkout of an older hipposeg to time the CLI against")
    parser.add_argument("--data-root", default=None, help="default: hipposeg's data-root resolution")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    if args.partner and args.predictor == "model" and args.cli_runs:
        parser.error("--partner: hipposeg segment has no --partner option, so its CLI timing would run --model "
                     "without the partner; add --cli-runs 0")

    import nibabel as nib

    from hipposeg.data.manifest import resolve_data_root
    from hipposeg.data.readers import case_name, read_image
    from hipposeg.data.writers import write_nifti
    from hipposeg.fullhead.evaluation import (
        dice_per_side,
        left_is_left,
        move_and_regrid,
        oracle_predictor,
        overlap_per_side,
        template_predictor,
        thicken_slices,
    )
    from hipposeg.fullhead.pipeline import segment_full_head
    from hipposeg.fullhead.registration import register_to_template
    from hipposeg.segment import segment_inputs

    args.data_root = str(resolve_data_root(args.data_root))
    segmenter = None
    if args.predictor == "model":
        from hipposeg.segmenter import load_segmenter

        segmenter = load_segmenter(args.model, partner=args.partner, runtime=args.runtime)

    def run_cli_path(path: Path, ref, out: Path):
        """``hipposeg segment --full-head PATH -o OUT`` in-process: (its wall seconds, the mask, its volume row)."""
        engine = segmenter or PredictorSegmenter(oracle_predictor(ref) if args.predictor == "oracle"
                                                 else template_predictor)
        t0 = time.perf_counter()
        run = segment_inputs([str(path)], out, engine, mode="full-head", progress=False, log=print)
        seconds = time.perf_counter() - t0
        if run.failed or not run.rows:
            raise SystemExit(f"{path}: {run.summary()}")
        labels = np.asarray(nib.load(out / f"{case_name(path)}_seg.nii.gz").dataobj)
        return seconds, labels, run.rows[0]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        first = Path(args.data_root) / "fullhead" / SUBJECTS[0]
        t = time.perf_counter()  # imports, the template pyramid, first passes: paid once per process
        run_cli_path(first / "t1.nii.gz", read_image(first / "hippocampus_lr.nii.gz"), tmp / "warm-up")
        warmup_s = time.perf_counter() - t
        for subject in SUBJECTS:
            folder = Path(args.data_root) / "fullhead" / subject
            image = read_image(folder / "t1.nii.gz")
            truth = read_image(folder / "hippocampus_lr.nii.gz")
            rng = np.random.default_rng([args.seed, SUBJECTS.index(subject)])
            variants = [("original", folder / "t1.nii.gz", truth, {})]
            for k in range(args.moved):
                moved, moved_truth, info = move_and_regrid(image, truth, rng)
                path = tmp / f"{subject}_moved{k}.nii.gz"
                write_nifti(path, moved.array, moved.affine, overwrite=True)
                info = {key: v for key, v in info.items() if key != "move_ras"}
                variants.append((f"moved{k}", path, moved_truth, info))
            for mm in args.thick:
                thick, thick_truth, info = thicken_slices(image, truth, mm)
                path = tmp / f"{subject}_thick{mm:g}.nii.gz"
                write_nifti(path, thick.array, thick.affine, overwrite=True)
                variants.append((f"thick{mm:g}mm", path, thick_truth, info))
            for name, path, ref, info in variants:
                seconds, labels, volume_row = run_cli_path(path, ref, tmp / f"{subject}_{name}")
                scan = read_image(path)
                # the floor: the template region alone, through a registration of its own (not timed)
                tmpl = segment_full_head(scan, template_predictor, registration=register_to_template(scan))
                dice = dice_per_side(labels, ref.array)
                row = {
                    "subject": subject,
                    "variant": name,
                    **info,
                    "input": {"shape": list(scan.shape), "spacing": [round(s, 3) for s in scan.spacing],
                              "orientation": scan.orientation},
                    "dice": {k: round(v, 4) for k, v in dice.items()},
                    "precision_recall": {side: {k: round(v, 4) for k, v in pr.items()}
                                         for side, pr in overlap_per_side(labels, ref.array).items()},
                    "template_region_dice": {k: round(v, 4) for k, v in dice_per_side(tmpl.labels, ref.array).items()},
                    "left_on_left": left_is_left(labels, scan.affine, ref),
                    "seconds": round(seconds, 3),
                    "registration_metric": round(volume_row["registration_metric"], 4),
                    "qc_flags": volume_row.get("qc_flags"),
                }
                rows.append(row)
                print(
                    f"{subject:9s} {name:8s} {scan.orientation} {'x'.join(f'{s:.2g}' for s in scan.spacing):12s} "
                    f"dice L {dice['left']:.3f} R {dice['right']:.3f}  "
                    f"precision/recall L {row['precision_recall']['left']['precision']:.2f}/"
                    f"{row['precision_recall']['left']['recall']:.2f} R {row['precision_recall']['right']['precision']:.2f}/"
                    f"{row['precision_recall']['right']['recall']:.2f}  template L {row['template_region_dice']['left']:.3f} "
                    f"R {row['template_region_dice']['right']:.3f}  left-on-left {row['left_on_left']}  "
                    f"{row['seconds']:.2f} s  metric {row['registration_metric']:.3f} flags {row['qc_flags'] or '-'}",
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
        **(provenance(segmenter) if segmenter else {"model": args.predictor, "model_3d": None}),
        "command": this_command(__file__, argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "timed": "hipposeg.segment.segment_inputs(mode='full-head'): hipposeg segment --full-head in-process, "
                 "segmenter loaded once",
        "runtime": runtime_label(segmenter) if segmenter else None,
        "warmup_seconds": round(warmup_s, 3),
        "original": summary(originals),
        "moved": summary(moved) if moved else None,
        "moved_minus_original_max_abs_dice": by_subject,
        "thick_slices": summary(thick) if thick else None,
        "rows": rows,
    }
    if segmenter is not None and args.cli_runs:
        heads = [str(Path(args.data_root) / "fullhead" / s / "t1.nii.gz") for s in SUBJECTS]
        options = ["--full-head", "--runtime", args.runtime, *(["--model", args.model] if args.model else [])]
        result["cli"] = time_cli(heads, options, runs=args.cli_runs, baseline=args.baseline)
    write_result(args.out, result)
    if segmenter is not None:  # a shipped model's run to its usual output refreshes its README table
        from hipposeg.bundle import shipped_model, shipped_partner

        ran = (Path(segmenter.checkpoint), segmenter.partner_checkpoint and Path(segmenter.partner_checkpoint))
        for name, (out, block) in SHIPPED_TABLES.items():
            shipped = shipped_partner(name)
            if ran == (shipped_model(name).resolve(), shipped and shipped.resolve()) \
                    and Path(args.out).resolve() == out.resolve():
                write_table(result, block)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return result


if __name__ == "__main__":
    main()
