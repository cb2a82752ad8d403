"""Speed of ``hipposeg segment`` on CPU: the real engine, model loaded once.

    python bench/speed.py [--n 60] [--threads 2] [--model NAME|FILE] [--partner FILE] [--tta] [--runtime R]
                          [--cli-crops 20] [--baseline CHECKOUT] [--out JSON]

Three measurements, all of the code every door runs (no copy of the inferer here), with the runtime that ran the
networks (``--runtime``, as ``hipposeg segment --runtime``: auto, torch, onnx, openvino):

1. The engine: :func:`hipposeg.segmenter.load_segmenter` once, then :meth:`Segmenter.segment` on each of ``--n``
   Task04 volumes (``imagesTr``, sorted), read beforehand: median seconds per volume and per stage (preprocess,
   predict = the inferer with the network(s), post-process = ``Invertd`` / argmax / largest component).
2. End to end: :func:`hipposeg.segment.segment_inputs` (what ``hipposeg segment`` calls) with the same segmenter on
   the default data (``hipposeg segment`` without inputs: the Task04 test image and five fold-0 cases): read,
   check, segment, volume row, mask, QC picture, row file and the volume tables; median seconds per case.
3. Through the real CLI, as a user runs it (``bench/cli_timing.py``): ``hipposeg segment`` of ``--cli-crops`` Task04
   crops with ``--no-qc`` in fresh processes (three after a warm-up; ``--model``, ``--runtime``, ``--tta`` as given,
   ``--threads`` as ``OMP_NUM_THREADS``): wall seconds of the process and the per-case median it prints; and
   ``hipposeg segment missing.nii.gz`` (start-up to its one-line error). ``hipposeg segment`` has no option for a
   partner, so ``--partner`` (engine and end to end only) needs ``--cli-crops 0``. With ``--baseline``
   (a checkout of an older version, e.g. a ``git worktree`` of 0.6.1) the same commands run there alternately and
   the pairwise speed-up is recorded.

Three warm-up volumes run first. The result (``bench/results/speed.json`` or ``--out``) records the networks the
segmenter loaded and the machine (CPU model, cores, instruction set); ``bench/README.md``'s ``speed-table`` block
is rebuilt from every ``speed*.json`` (``speed_table``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import RESULTS, describe_machine, machine, markdown_table, provenance, read_result, replace_block, \
    runtime_label, shown, this_command, time_cli, write_result

README = Path(__file__).resolve().parent / "README.md"
#: the results the speed table shows, in its column order: column name -> results file (the default with each
#: runtime: ``--runtime onnx --out bench/results/speed_onnx.json``, ``--runtime torch --out .../speed_torch.json``)
TABLE_RESULTS = {"default": "speed", "default, ONNX Runtime": "speed_onnx", "default, PyTorch": "speed_torch",
                 "ensemble": "speed_ensemble", "hires": "speed_hires"}


def time_engine(segmenter, paths: list[str]) -> dict:
    """Median seconds of ``segmenter.segment`` per volume, and per stage, over ``paths`` (read beforehand)."""
    from hipposeg.data.readers import check_volume, read_image

    images = [check_volume(read_image(p)) for p in paths]
    for image in images[:3]:  # warm-up: first passes allocate and pick kernels
        segmenter.segment(image)
    total, stages = [], {"preprocess": [], "predict": [], "postprocess": []}
    for image in images:
        t0 = time.perf_counter()
        result = segmenter.segment(image)
        total.append(time.perf_counter() - t0)
        for key in stages:
            stages[key].append(result.seconds[key])
    return {"n_volumes": len(images), "median_segment_s": statistics.median(total),
            "median_stage_s": {k: statistics.median(v) for k, v in stages.items()}}


def time_end_to_end(segmenter, inputs: list[str]) -> dict:
    """Median seconds per case of :func:`hipposeg.segment.segment_inputs` over ``inputs`` (QC pictures included,
    as ``hipposeg segment`` writes them), after one warm-up case into another folder."""
    from hipposeg.segment import segment_inputs

    with tempfile.TemporaryDirectory() as tmp:
        segment_inputs(inputs[:1], Path(tmp) / "warm-up", segmenter, progress=False, log=lambda line: None)
        t0 = time.perf_counter()
        run = segment_inputs(inputs, Path(tmp) / "out", segmenter, progress=False, log=print)
        wall = time.perf_counter() - t0
    if run.failed or len(run.done) != len(inputs):
        raise SystemExit(f"end-to-end run did not segment every input: {run.summary()}")
    from hipposeg.data.manifest import resolve_data_root

    root = resolve_data_root()
    shown_inputs = [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else shown(p) for p in inputs]
    return {"inputs": shown_inputs, "n_cases": len(run.done),
            "median_end_to_end_s": statistics.median(run.seconds_per_case), "wall_s": wall, "qc_pictures": True}


def time_crops_cli(args, crops: list[str]) -> dict:
    """``hipposeg segment`` of ``crops`` and of a missing file (``start_up``) in fresh processes
    (:func:`common.time_cli`), with this bench's ``--runtime``, ``--model``, ``--tta`` and ``--threads``."""
    options = ["--runtime", args.runtime, *(["--model", args.model] if args.model else []),
               *(["--tta"] if args.tta else [])]
    out = time_cli(crops, options, threads=args.threads, baseline=args.baseline)
    out["start_up"] = time_cli(["missing.nii.gz"], options, threads=args.threads, baseline=args.baseline,
                               expect_cases=False)
    return out


def speed_table(results: dict[str, dict]) -> str:
    """The speed table of ``bench/README.md``: one column per result (column name -> speed JSON)."""
    first = next(iter(results.values()))

    def cli(r, *keys, digits=3):
        value = r.get("cli")
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return "–" if value is None else f"{value:.{digits}f}"

    def vs(r, key):
        c = r.get("cli") or {}
        return f"{c[key]:.2f}x" if c.get(key) else "–"

    rows = [["runtime (`--runtime`)"] + [r.get("runtime", "torch") for r in results.values()],
            ["engine: `Segmenter.segment`, median per volume"] + [f"{r['median_segment_s']:.3f}" for r in results.values()],
            ["of which predict (inferer + network)"] + [f"{r['median_stage_s']['predict']:.3f}" for r in results.values()],
            ["preprocess / post-process"] + [f"{r['median_stage_s']['preprocess']:.4f} / "
                                             f"{r['median_stage_s']['postprocess']:.4f}" for r in results.values()],
            ["end to end: `segment_inputs`, median per case (QC picture included)"]
            + [f"{r['end_to_end']['median_end_to_end_s']:.3f}" for r in results.values()],
            ["CLI: `hipposeg segment` of the crops (`--no-qc`), process wall / crop (start-up included)"]
            + [cli(r, "wall_per_input_s") for r in results.values()],
            ["CLI: its printed median per crop (model loaded)"] + [cli(r, "per_case_s", digits=2) for r in results.values()],
            ["CLI: `hipposeg segment missing.nii.gz`, process wall"] + [cli(r, "start_up", "wall_s", digits=2)
                                                                        for r in results.values()],
            ["the same back to back with the baseline: its wall / crop"] + [cli(r, "baseline", "wall_per_input_s")
                                                                              for r in results.values()],
            ["speed-up over the baseline: wall / per crop"] + [f"{vs(r, 'speed_up_wall')} / {vs(r, 'speed_up_per_case')}"
                                                                for r in results.values()]]
    header = ["seconds"] + [f"`{name}` ({r['model']}{' + ' + r['model_3d'] if r.get('model_3d') else ''})"
                            for name, r in results.items()]
    baselines = sorted({r["cli"]["baseline_checkout"] for r in results.values() if (r.get("cli") or {}).get("baseline_checkout")})
    crops = sorted({r["cli"]["n_inputs"] for r in results.values() if r.get("cli")})
    caption = (f"{first['n_volumes']} Task04 volumes for the engine, the {first['end_to_end']['n_cases']} cases of the "
               f"default data end to end"
               + (f", {'/'.join(map(str, crops))} crops per CLI process (median of 3 fresh processes)" if crops else "")
               + (f", baseline {', '.join(baselines)} run alternately with it" if baselines else "")
               + f"; {describe_machine(first['machine'])}, {first['machine'].get('torch_threads')} "
               f"torch threads, torch {first['torch']}, {first['date']}; "
               + "; ".join(f"`{r['command']}`" for r in results.values()) + ":")
    return caption + "\n\n" + markdown_table(header, rows)


def write_table(results_dir: Path = RESULTS, readme: Path = README) -> bool:
    """Rebuild the ``speed-table`` block of ``readme`` from the speed results there are; False without markers."""
    results = {name: r for name, file in TABLE_RESULTS.items() if (r := read_result(file, results_dir))
               and "median_segment_s" in r}
    return bool(results) and replace_block(readme, "speed-table", speed_table(results))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="number of Task04 volumes for the engine (imagesTr, sorted)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the CLI processes get them as "
                                                               "OMP_NUM_THREADS)")
    parser.add_argument("--tta", action="store_true", help="left-right flip TTA (hipposeg segment --tta)")
    parser.add_argument("--model", "--checkpoint", dest="model", default=None,
                        help="what hipposeg segment --model takes: a shipped name (core, hires, ...), a bundle folder "
                             "or a checkpoint file (run alone); default: the shipped default")
    parser.add_argument("--partner", default=None, help="a 3D partner checkpoint to average with --model (engine and "
                                                         "end to end only: hipposeg segment has no --partner, so it "
                                                         "needs --cli-crops 0)")
    parser.add_argument("--runtime", default="auto", help="what runs the networks (hipposeg segment --runtime)")
    parser.add_argument("--cli-crops", type=int, default=20, help="Task04 crops per hipposeg segment process (0: no "
                                                                   "CLI timing)")
    parser.add_argument("--baseline", help="a checkout of an older hipposeg (its own bundle) to time the CLI against")
    parser.add_argument("--out", default=str(RESULTS / "speed.json"))
    args = parser.parse_args(argv)
    if args.partner and args.cli_crops:
        parser.error("--partner: hipposeg segment has no --partner option, so its CLI timing would run --model "
                     "without the partner; add --cli-crops 0")

    import torch

    from hipposeg.data.manifest import load_manifest
    from hipposeg.segment import default_inputs
    from hipposeg.segmenter import load_segmenter

    torch.set_num_threads(args.threads)
    segmenter = load_segmenter(args.model, partner=args.partner, flip_tta=args.tta or None, runtime=args.runtime)
    paths = [d["image"] for d in load_manifest().datalist("msd_hippocampus", "all")][: args.n]
    result = {"command": this_command(__file__, argv), "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": machine(), "torch": torch.__version__, **provenance(segmenter), "tta": args.tta,
              "runtime": runtime_label(segmenter)}
    result.update(time_engine(segmenter, paths))
    result["end_to_end"] = time_end_to_end(segmenter, [str(p) for p in default_inputs()])
    if args.cli_crops:
        result["cli"] = time_crops_cli(args, [str(p) for p in paths[:args.cli_crops]])
    write_result(args.out, result)
    write_table()
    print(f"{result['model']}{' + ' + result['model_3d'] if result['model_3d'] else ''}: "
          f"segment {result['median_segment_s']:.3f} s, end to end {result['end_to_end']['median_end_to_end_s']:.3f} s "
          f"per case ({describe_machine(result['machine'])})")
    return result


if __name__ == "__main__":
    main()
