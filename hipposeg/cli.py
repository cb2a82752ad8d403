"""The ``hipposeg`` command: a thin layer over the library.

Known errors (bad input, missing data, refused overwrite) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _err(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)


# --------------------------------------------------------------------------- info
def cmd_info(args) -> int:
    from hipposeg.data.readers import read_image
    from hipposeg.errors import HippoSegError

    failed = 0
    for path in args.paths:
        try:
            print(read_image(path, series_uid=args.series_uid).describe())
        except HippoSegError as exc:
            _err(str(exc))
            failed += 1
    return EXIT_BAD_INPUT if failed else EXIT_OK


# --------------------------------------------------------------------------- data
def cmd_data_verify(args) -> int:
    from hipposeg.data.manifest import load_manifest

    manifest = load_manifest(args.manifest)
    names = [args.dataset] if args.dataset else [n for n, e in manifest.datasets.items() if "cases_file" not in e]
    from hipposeg.errors import DataNotFoundError

    bad, missing = 0, 0
    for name in names:
        try:
            problems = manifest.verify(name, args.data_root, progress=not args.quiet)
        except DataNotFoundError as exc:
            if len(names) == 1:
                raise
            _err(str(exc))
            missing += 1
            continue
        n_files = len(manifest.files(name, args.data_root))
        for line in problems:
            print(f"BAD {line}")
        print(f"{name}: {n_files - len(problems)}/{n_files} files OK ({manifest.dataset_dir(name, args.data_root)})")
        bad += len(problems)
    return EXIT_CHECK_FAILED if bad else EXIT_BAD_INPUT if missing else EXIT_OK


def cmd_data_list(args) -> int:
    from hipposeg.data.manifest import load_manifest

    manifest = load_manifest(args.manifest)
    try:
        items = manifest.datalist(args.dataset, args.split, None if args.fold < 0 else args.fold, args.data_root)
    except ValueError as exc:
        _err(f"data list: {exc}")
        return EXIT_BAD_INPUT
    for item in items:
        print(f"{item['case']}\t{item['image']}\t{item.get('label', '')}")
    return EXIT_OK


# --------------------------------------------------------------------------- bundle-path
def cmd_bundle_path(args) -> int:
    from hipposeg.bundle import BUNDLE_DIR
    from hipposeg.errors import InputError

    if not (BUNDLE_DIR / "configs" / "metadata.json").is_file():
        raise InputError(BUNDLE_DIR, "the hipposeg bundle is missing from this installation (reinstall hipposeg)")
    print(BUNDLE_DIR)
    return EXIT_OK


# --------------------------------------------------------------------------- import-mrihs
def cmd_import_mrihs(args) -> int:
    from hipposeg.data.mrihs import import_mrihs

    report = import_mrihs(args.kaggle_root, args.out_dir, spacing=tuple(args.spacing), overwrite=args.overwrite,
                          progress=not args.quiet)
    for subject, reason in report.skipped:
        print(f"skipped {subject}: {reason}", file=sys.stderr)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(report.summary())
    return EXIT_OK if report.imported or report.listed else EXIT_BAD_INPUT


# --------------------------------------------------------------------------- segment
def cmd_segment(args) -> int:
    from hipposeg.bundle import resolve_model
    from hipposeg.data.writers import check_output_folder
    from hipposeg.segment import default_inputs, expand_inputs, segment_inputs

    inputs = args.inputs
    if not inputs:
        inputs = default_inputs(args.data_root)
        print(f"no INPUT given: segmenting the default data ({len(inputs)} Task04 volumes from {inputs[0].parent.parent})")
    # every check that needs no model first, before torch, MONAI and smp are imported (about 10 s on 2 cores)
    resolve_model(args.model)  # a bad --model is one line
    check_output_folder(args.output)  # one line naming the folder
    cases, problems = expand_inputs(inputs)
    if not cases:  # nothing left to segment: each input's problem, one line each
        for line in problems:
            _err(line)
        return EXIT_BAD_INPUT
    from hipposeg.segmenter import load_segmenter

    segmenter = load_segmenter(args.model, device=args.device, flip_tta=args.tta or None, batch_size=args.batch_size,
                               runtime=args.runtime, int8=args.int8)
    mode = "full-head" if args.full_head else "crop" if args.crop else "auto"
    run = segment_inputs(inputs, args.output, segmenter, overwrite=args.overwrite, series_uid=args.series_uid,
                         mode=mode, qc_png=not args.no_qc, save_uncertainty=args.save_uncertainty,
                         progress=not args.quiet)
    print(run.summary())
    if run.done or run.already_done:
        written = ["<case>_seg.nii.gz", "<case>_seg.json label names", *([] if args.no_qc else ["<case>_qc.png"]),
                   *(["<case>_uncertainty.nii.gz"] if args.save_uncertainty else []), "<case>_volumes.json",
                   "volumes.csv", "volumes.json"]
        print(f"outputs: {Path(args.output).resolve()} ({', '.join(written)})")
    if run.failed:
        print("failed:\n  " + "\n  ".join(run.failed), file=sys.stderr)
    if run.skipped:
        print("skipped:\n  " + "\n  ".join(run.skipped), file=sys.stderr)
    return EXIT_BAD_INPUT if run.failed else EXIT_OK


# --------------------------------------------------------------------------- longitudinal
def cmd_longitudinal(args) -> int:
    from hipposeg.bundle import resolve_model
    from hipposeg.data.writers import check_output_folder
    from hipposeg.longitudinal import parse_times, run_longitudinal
    from hipposeg.segmenter import load_segmenter

    times = parse_times(args.times, len(args.scans))
    resolve_model(args.model)  # a bad --model is one line, before anything else
    check_output_folder(args.output)
    result = run_longitudinal(args.scans, args.output, lambda: load_segmenter(args.model, device=args.device),
                              times=times, overwrite=args.overwrite, qc_png=not args.no_qc)
    for row in result.rows:
        changes = "  ".join(f"{side} {row[f'volume_{side}_mm3']:.0f} mm3 ({row[f'change_{side}_pct']:+.2f} %)"
                            for side in ("left", "right"))
        print(f"{row['scan']}: {changes}" + (f"  flags: {row['qc_flags']}" if row["qc_flags"] else ""))
    for side, rate in result.rates.items():
        if rate["pct_per_year"] is not None:
            se = f" +- {rate['se_pct_per_year']:.2f}" if rate["se_pct_per_year"] is not None else ""
            print(f"rate {side}: {rate['pct_per_year']:+.2f}{se} % per year")
    print(f"outputs: {Path(args.output).resolve()} (<scan>_seg.nii.gz, longitudinal.csv, longitudinal.json"
          f"{', longitudinal_qc.png' if not args.no_qc else ''}); {result.timings['total_s']:.1f} s")
    return EXIT_OK


# --------------------------------------------------------------------------- bids
def cmd_bids(args) -> int:
    import shlex

    from hipposeg.bids import parse_shard, run_bids_app

    shard = parse_shard(args.shard)
    command = "hipposeg " + " ".join(shlex.quote(a) for a in (args.argv or []))
    return run_bids_app(args.bids_dir, args.output_dir, args.analysis_level,
                        participant_labels=args.participant_label, session_labels=args.session_label, shard=shard,
                        distributed=args.distributed, model=args.model, device=args.device,
                        overwrite=args.overwrite, progress=not args.quiet, command=command,
                        longitudinal=args.longitudinal, runtime=args.runtime, int8=args.int8,
                        save_uncertainty=args.save_uncertainty)


# --------------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    from hipposeg.data.manifest import load_manifest
    from hipposeg.errors import HippoSegError
    from hipposeg.evaluation import evaluate_pair, pair_folders, rows_to_csv, write_report

    from hipposeg.errors import InputError

    manifest = load_manifest()
    if not manifest.entry(args.dataset).get("labels"):
        raise InputError(manifest.path, f"dataset {args.dataset!r} has no label names to evaluate against")
    if args.fold is not None:
        if args.pred_dir or args.gt_dir:
            raise InputError(None, "evaluate takes PRED_DIR GT_DIR, or --fold N (a model on a validation fold), "
                                   "not both")
        return _evaluate_fold(args)
    if not (args.pred_dir and args.gt_dir):
        raise InputError(None, "evaluate needs PRED_DIR and GT_DIR (or --fold N)")
    if args.model:
        raise InputError(None, "--model goes with --fold (PRED_DIR holds masks some model already made)")
    labels = manifest.label_names(args.dataset)
    pairs, unpaired = pair_folders(args.pred_dir, args.gt_dir)
    rows, terms, failed = [], [], list(unpaired)
    for case, pred, truth in pairs:
        try:
            row, case_terms = evaluate_pair(pred, truth, labels)
            rows.append({"case": case, **row})
            terms += case_terms
        except HippoSegError as exc:
            failed.append(str(exc))
    for line in failed:
        _err(line)
    if rows:
        if args.output:
            summary_path = Path(args.output).with_suffix(".summary.json")
            summary = write_report(rows, args.output, summary_path, terms, overwrite=args.overwrite)
            print(f"wrote {args.output} and {summary_path}")
        else:
            print(rows_to_csv(rows), end="")
            from hipposeg.evaluation import build_summary

            summary = build_summary(rows, terms)
        print(f"{len(rows)} case(s): mean Dice whole {summary['dice_whole']['mean']:.4f}, "
              f"HD95 {summary['hd95_whole_mm']['mean']:.2f} mm", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _evaluate_fold(args) -> int:
    """``hipposeg evaluate --fold N [--model M]``: the bundle's evaluate.json (an overlay of inference.json) on the
    validation fold N, the model chosen as every door chooses it; the report as for PRED_DIR GT_DIR."""
    import json
    import tempfile

    from hipposeg.bundle import resolve_model, run_workflow
    from hipposeg.data.writers import check_writable, write_text

    bundle_dir, model_overrides = resolve_model(args.model)
    if args.output:  # refused before the model runs
        for path in (Path(args.output), Path(args.output).with_suffix(".summary.json")):
            check_writable(path, args.overwrite)
    overrides = {"dataset": args.dataset, "fold": args.fold, **model_overrides}
    if args.max_cases:
        overrides["max_cases"] = args.max_cases
    if args.data_root:
        overrides["data_root"] = str(Path(args.data_root).resolve())
    with tempfile.TemporaryDirectory(prefix="hipposeg_eval_") as tmp:
        run_workflow(["inference.json", "evaluate.json"], bundle_dir, {**overrides, "output_dir": tmp})
        table = (Path(tmp) / "metrics.csv").read_text()
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    if args.output:
        summary_path = Path(args.output).with_suffix(".summary.json")
        write_text(args.output, table, overwrite=args.overwrite)
        write_text(summary_path, json.dumps(summary, indent=1) + "\n", overwrite=args.overwrite)
        print(f"wrote {args.output} and {summary_path}")
    else:
        print(table, end="")
    print(f"{summary['n_cases']} case(s) of fold {args.fold}: mean Dice whole {summary['dice_whole']['mean']:.4f}, "
          f"HD95 {summary['hd95_whole_mm']['mean']:.2f} mm", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- train / infer (bundle doors)
def cmd_train(args) -> int:
    from hipposeg.bundle import parse_overrides, run_workflow

    # fold < 0: train.json's fold None (every case trains, no validation), as the expression "$None" because
    # monai.bundle.run drops overrides whose value is None
    fold = "$None" if args.fold < 0 else args.fold
    overrides = {"dataset": args.dataset, "fold": fold, **parse_overrides(args.set)}
    for key in ("epochs", "data_root", "output_dir", "ckpt_dir", "resume_from", "max_minutes"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    for key in ("output_dir", "ckpt_dir", "resume_from"):  # relative to where the user runs it, not the bundle
        if key in overrides:
            overrides[key] = str(Path(overrides[key]).resolve())
    if args.resume_from:  # before any data is loaded: a bad file fails in seconds, with one line
        _check_resume(args.resume_from, args.bundle, overrides)
    run_workflow(["train.json"], args.bundle, overrides)
    return EXIT_OK


def _check_resume(path: str, bundle: str | None, overrides: dict) -> None:
    """Check ``--resume-from`` against the network and epochs the bundle's train.json configures."""
    from hipposeg.bundle import parse_bundle
    from hipposeg.training import check_resume_checkpoint

    parser = parse_bundle(["train.json"], bundle, overrides)
    check_resume_checkpoint(path, network=parser.get_parsed_content("network_def"),
                            max_epochs=parser.get_parsed_content("epochs"))


def cmd_infer(args) -> int:
    from hipposeg.bundle import parse_overrides, resolve_model, run_workflow

    bundle_dir, model_overrides = resolve_model(args.model, args.bundle)  # the same networks as segment --model
    overrides = {"dataset_dir": args.input, "output_dir": args.output, "flip_tta": args.tta,
                 "save_uncertainty": args.save_uncertainty, "overwrite": args.overwrite, "runtime": args.runtime,
                 "int8": args.int8, **model_overrides, **parse_overrides(args.set)}
    run_workflow(["inference.json"], bundle_dir, overrides)
    return EXIT_OK


def cmd_export_half(args) -> int:
    from hipposeg.model import save_half_precision

    out = save_half_precision(args.checkpoint, args.output, overwrite=args.overwrite)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return EXIT_OK


# --------------------------------------------------------------------------- parser
def _add_runtime(p: argparse.ArgumentParser) -> None:
    from hipposeg.runtime_names import RUNTIMES  # not hipposeg.runtime, which imports torch: --help stays fast

    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="what runs the networks on a CPU: auto (default: OpenVINO, else ONNX Runtime when installed, "
                        "else PyTorch; the fastest measured, README.md 'Speed'), or one of them; a GPU runs PyTorch")
    p.add_argument("--no-int8", dest="int8", action="store_false",
                   help="under OpenVINO, run the core in float32 instead of its shipped int8 copy (made from the "
                        "same weights: python -m hipposeg.quantize; README.md 'Speed')")


def build_parser() -> argparse.ArgumentParser:
    from hipposeg import __version__

    parser = argparse.ArgumentParser(prog="hipposeg", description="Hippocampus segmentation in brain MRI.")
    parser.add_argument("--version", action="version", version=f"hipposeg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="one line per image: shape, voxel size, orientation, dtype, range")
    p.add_argument("paths", nargs="+", help="NIfTI files or DICOM series folders")
    p.add_argument("--series-uid", help="the DICOM series to read when a folder holds several")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("data", help="datasets of data_manifest.json")
    dsub = p.add_subparsers(dest="data_command", required=True)
    v = dsub.add_parser("verify", help="check every listed file exists and matches its sha256")
    v.add_argument("--dataset", help="one dataset (default: every dataset with checksums in the manifest)")
    v.set_defaults(func=cmd_data_verify)
    ls = dsub.add_parser("list", help="list the cases of a split")
    ls.add_argument("--dataset", default="msd_hippocampus")
    ls.add_argument("--split", default="val", choices=["train", "val", "all", "test"])
    ls.add_argument("--fold", type=int, default=0, help="validation fold (-1: none)")
    ls.set_defaults(func=cmd_data_list)
    for q in (v, ls):
        q.add_argument("--data-root", help="folder holding the datasets (else $HIPPOSEG_DATA, ../shared/data, cache)")
        q.add_argument("--manifest", help="another data_manifest.json")
        q.add_argument("--quiet", action="store_true")

    p = sub.add_parser("bundle-path", help="print the installed MONAI bundle folder (copy it to run or change it)")
    p.set_defaults(func=cmd_bundle_path)

    p = sub.add_parser("import-mrihs", help="import the Kaggle mrihs JPEG slices as NIfTI volumes")
    p.add_argument("kaggle_root")
    p.add_argument("-o", "--out-dir", required=True)
    p.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("X", "Y", "Z"))
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_import_mrihs)

    from hipposeg.confidence import UNCERTAIN_ABOVE_BITS
    from hipposeg.qc_flags import help_text as qc_flags_help  # plain Python: --help stays fast

    p = sub.add_parser("segment", help="masks, volumes and QC pictures for NIfTI files, folders or DICOM series",
                       epilog=qc_flags_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="NIfTI files, folders of NIfTI files, DICOM series folders "
                                              "(none: the default demo data)")
    p.add_argument("-o", "--output", default="hipposeg_out", help="output folder (default: hipposeg_out)")
    p.add_argument("--model", help="a shipped model: 'default' (the 2.5D three-axis consensus alone; also named "
                                   "'core'), 'ensemble' (the same core averaged with a 3D network: the default of "
                                   "0.6-0.7: slower, and not more accurate), "
                                   "'hires' (slices upsampled 1.5x, about twice the time), 'default-0.5' (0.5.0's "
                                   "default); or another bundle folder or a checkpoint (.pt), which runs alone. "
                                   "Their measured accuracy and speed: README.md, 'Shipped models'")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, help="slices per forward pass")
    _add_runtime(p)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (left-right)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--series-uid", help="the DICOM series to read when a folder holds several")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full-head", action="store_true", help="treat every input as a whole-head scan")
    mode.add_argument("--crop", action="store_true", help="treat every input as a hippocampus crop")
    p.add_argument("--no-qc", action="store_true", help="skip the QC pictures")
    p.add_argument("--save-uncertainty", action="store_true",
                   help="also write <case>_uncertainty.nii.gz: per-voxel entropy of the class probabilities (bits), "
                        "in the input's grid (whole heads: from both crops' probabilities mapped back, 0 elsewhere); "
                        f"the QC picture shades the voxels above {UNCERTAIN_ABOVE_BITS:g} bit with or without it")
    p.add_argument("--data-root", help="where the default data lives")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("longitudinal", help="two or more whole-head T1 scans of one subject: hippocampal volume "
                                            "change per side and its rate, in one unbiased within-subject space")
    p.add_argument("scans", nargs="+", help="whole-head T1 scans of one subject (NIfTI files or DICOM series "
                                            "folders); the first is the baseline unless --times says otherwise")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--times", help="acquisition times in years, one per scan, comma-separated (e.g. 0,1.1,2.0); "
                                   "default: the acquisition dates when every scan has one (DICOM header; for "
                                   "NIfTI its sidecar JSON's AcquisitionDateTime, as dcm2niix writes it)")
    p.add_argument("--model", help="as for segment: a shipped model's name, a bundle folder or a checkpoint")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-qc", action="store_true", help="skip the QC picture")
    p.set_defaults(func=cmd_longitudinal)

    p = sub.add_parser("bids", help="BIDS App: whole-head T1w images of a BIDS dataset -> BIDS-Derivatives "
                                    "(masks, volumes, eTIV, QC), then a group table and report")
    p.add_argument("bids_dir", help="the BIDS dataset (with dataset_description.json)")
    p.add_argument("output_dir", help="the derivatives folder, e.g. BIDS_DIR/derivatives/hipposeg")
    p.add_argument("analysis_level", choices=["participant", "group"],
                   help="participant: segment each image; group: group table and report of every finished image")
    p.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                   help="only these subjects (01 or sub-01)")
    p.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL", help="only these sessions")
    p.add_argument("--shard", metavar="I/N", help="take images I, I+N, I+2N, ... (0-based), e.g. a SLURM array "
                                                   "task: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    p.add_argument("--distributed", action="store_true",
                   help="run under torchrun: each rank takes a disjoint share, rank 0 writes the group outputs")
    p.add_argument("--model", help="as for segment: a shipped model's name, a bundle folder or a checkpoint")
    p.add_argument("--device", help="cpu or cuda (default: cpu; with --distributed, one GPU per rank if present)")
    _add_runtime(p)
    p.add_argument("--overwrite", action="store_true", help="redo images that are already finished")
    p.add_argument("--longitudinal", action=argparse.BooleanOptionalAction, default=True,
                   help="participant level: for each subject with T1w images in two or more sessions also write "
                        "sub-X_desc-hipposeg_longitudinal.tsv and its picture (hipposeg longitudinal; on by default)")
    p.add_argument("--save-uncertainty", action="store_true",
                   help="participant level: also write ..._space-T1w_desc-hipposeg_uncertainty.nii.gz (per-voxel "
                        "entropy of the class probabilities, bits, in the T1w's grid) and its .json sidecar")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_bids)

    p = sub.add_parser("evaluate", help="per-case Dice, HD95 and volumes of predictions against ground truth, "
                                         "or of a model on a validation fold (--fold)")
    p.add_argument("pred_dir", nargs="?", help="folder of masks (<case>_seg.nii.gz or <case>.nii.gz)")
    p.add_argument("gt_dir", nargs="?", help="folder of ground-truth label maps (<case>.nii.gz)")
    p.add_argument("--fold", type=int, help="instead of folders: segment the validation fold N of --dataset with "
                                            "--model through the bundle's evaluate.json and score it")
    p.add_argument("--model", help="with --fold: a shipped model's name, a bundle folder or a checkpoint (as for "
                                   "segment; default: the default model)")
    p.add_argument("--data-root", help="with --fold: where the datasets live")
    p.add_argument("--max-cases", type=int, help="with --fold: only the fold's first N cases (a quick look)")
    p.add_argument("-o", "--output", help="report CSV (a .summary.json is written beside it); default: stdout")
    p.add_argument("--dataset", default="msd_hippocampus", help="label names come from this manifest entry")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="run the bundle's training workflow (configs/train.json)")
    p.add_argument("--dataset", default="msd_hippocampus")
    p.add_argument("--fold", type=int, default=0,
                   help="validation fold (the others train); -1: train on every labelled case, no validation, "
                        "model.pt is the final epoch (for a recipe fixed by cross-validation)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-minutes", dest="max_minutes", type=float)
    p.add_argument("--data-root")
    p.add_argument("--output-dir", dest="output_dir", default="runs",
                   help="logs, history.json and the resumable checkpoints (default: ./runs, never inside the "
                        "installed bundle)")
    p.add_argument("--ckpt-dir", dest="ckpt_dir",
                   help="where model.pt goes: the best epoch on the validation fold, or the final epoch with "
                        "--fold -1 (default: OUTPUT_DIR/models)")
    p.add_argument("--resume-from", dest="resume_from")
    p.add_argument("--bundle", help="bundle folder (default: the one shipped with hipposeg)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other bundle override (JSON value)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("infer", help="run the bundle's inference workflow (configs/inference.json) on a folder")
    p.add_argument("input", help="folder of NIfTI volumes (or one file)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--model", help="'default', 'core', 'hires', 'default-0.5', 'ensemble' (shipped models, see "
                                   "segment --help; their measured accuracy: README.md, 'Shipped models') or a "
                                   "checkpoint (.pt)")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--save-uncertainty", action="store_true",
                   help="also write <case>_uncertainty.nii.gz (as segment --save-uncertainty)")
    _add_runtime(p)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--bundle")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("export-half", help="half-precision copy of a trained checkpoint (how models/model.pt is made)")
    p.add_argument("checkpoint", help="a model.pt written by training")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export_half)
    return parser


def _known_cause(exc: BaseException | None):
    """The HippoSegError behind ``exc`` (itself, or somewhere in its cause/context chain), else None."""
    from hipposeg.errors import HippoSegError

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, HippoSegError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for reports
    try:
        return args.func(args)
    except Exception as exc:
        known = _known_cause(exc)  # MONAI wraps errors raised inside a config in RuntimeError
        if known is None:
            raise
        _err(str(known))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
