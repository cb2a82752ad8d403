"""Longitudinal mode with a known answer: simulated hippocampal atrophy on the three labelled whole heads.

Run: ``python bench/longitudinal.py [--subjects colin27 candi030 bert] [--model NAME] [--out FILE]``;
writes ``bench/results/longitudinal.json`` and, for the default output, the table of bench/README.md
("Longitudinal").

For every subject of ``../shared/data/fullhead`` it builds scans with a known change between them:

* moved copies: the head moved by a random rigid transform (up to 10 degrees and 10 mm, seeded) and resampled onto a
  grid of another orientation and voxel size (:func:`hipposeg.fullhead.evaluation.move_and_regrid`);
* atrophied copies: each hippocampus contracted smoothly towards its centre
  (:func:`hipposeg.longitudinal.simulation.simulate_atrophy`; the true change is measured on the warped label), then
  moved and regridded like the others;
* every moved or atrophied copy then gets its own Rician noise
  (:func:`hipposeg.longitudinal.simulation.add_scanner_noise`, sd 2 % of the head's 99th percentile, seeded apart
  from the moves): without it the copies of one head would share the original's noise pattern, which a deformable
  registration between two of them could lock onto, unlike two real sessions.

Pairs per subject: two with no change (original vs moved copy, two moved copies) and three with atrophy
(left / right: -1 / -2, -2 / -4, -4 / -1 %). Each pair is measured (a) by ``hipposeg segment --full-head`` on each scan
alone (the change of the ``volume_left_mm3`` / ``volume_right_mm3`` columns, what a user would compute) and (b) by
``hipposeg longitudinal`` (:func:`hipposeg.longitudinal.run_longitudinal`, in-process, segmenter loaded once; its
change by Jacobian integration, and its soft-volume cross-check column beside it), in both orders: the swapped run
gives c21, and (1 + c12)(1 + c21) - 1 is the order inconsistency. Errors are in percentage
points of the change; speed is the longitudinal run's seconds over those of the two segment runs of its scans,
timed just before it (back to back, so that a slow spell of the machine weighs on both sides alike).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import describe_machine, machine, markdown_table, provenance, replace_block, this_command, write_result

SUBJECTS = ("colin27", "candi030", "bert")
SIDES = ("left", "right")
DEFAULT_OUT = Path(__file__).parent / "results" / "longitudinal.json"
README = Path(__file__).parent / "README.md"
ATROPHY = ((-0.01, -0.02), (-0.02, -0.04), (-0.04, -0.01))  # (left, right) fractions
MAX_DEGREES, MAX_MM = 10.0, 10.0
#: the issue's must-show figures, percentage points
METHODS = ("segment", "longitudinal", "soft_volume")  # soft_volume: longitudinal's cross-check column
TARGETS = {"zero_mean": 0.3, "zero_worst": 0.8, "atrophy_mean": 0.4, "atrophy_worst": 1.0, "swap": 0.001}


def _stats(values: list[float]) -> dict:
    a = np.abs(np.asarray(values, dtype=np.float64))
    return {"n": int(a.size), "mean_abs": round(float(a.mean()), 4), "worst": round(float(a.max()), 4)}


def summarise(pairs: list[dict]) -> dict:
    """Mean |error| and worst per side and method, for the no-change and the atrophy pairs; swap consistency."""
    out = {}
    for kind in ("zero", "atrophy"):
        chosen = [p for p in pairs if p["kind"] == kind]
        if not chosen:
            continue
        out[kind] = {method: {side: _stats([p[method]["error_pp"][side] for p in chosen]) for side in SIDES}
                     for method in METHODS if all(method in p for p in chosen)}
        both = [abs(p[m]["error_pp"][s]) for p in chosen for s in SIDES for m in ("segment",)]
        lon = [abs(p["longitudinal"]["error_pp"][s]) for p in chosen for s in SIDES]
        out[kind]["longitudinal_over_segment"] = round(float(np.mean(lon) / np.mean(both)), 3) if np.mean(both) else None
    out["swap_worst"] = max(abs(p["swap_product_minus_1"][s]) for p in pairs for s in SIDES)
    ratios = [p["seconds"]["ratio"] for p in pairs]
    out["speed_ratio"] = {"mean": round(float(np.mean(ratios)), 3), "worst": round(float(np.max(ratios)), 3)}
    return out


def build_table(result: dict) -> str:
    """The bench/README.md table: per kind of pair, per side, mean |error| / worst in percentage points."""
    s = result["summary"]
    rows = []
    for kind, label in (("zero", "no change (moved, regridded copies)"), ("atrophy", "simulated atrophy -1 to -4 %")):
        if kind not in s:
            continue
        for side in SIDES:
            seg, lon = s[kind]["segment"][side], s[kind]["longitudinal"][side]
            soft = s[kind].get("soft_volume", {}).get(side)
            rows.append([label, side, seg["n"], f"{seg['mean_abs']:.2f} / {seg['worst']:.2f}",
                         f"**{lon['mean_abs']:.2f}** / {lon['worst']:.2f}",
                         f"{soft['mean_abs']:.2f} / {soft['worst']:.2f}" if soft else "-"])
    t = TARGETS
    caption = (f"`{result['command']}` ({result['model']}" + (f" + {result['model_3d']}" if result.get("model_3d") else "")
               + f"; {describe_machine(result['machine'])}). Error of the measured change, percentage points "
               "(mean absolute / worst), per pair of scans of one head; `longitudinal` measures the change by "
               f"{result.get('method', 'soft volumes')}, its soft-volume column is the cross-check:")
    table = markdown_table(["kind of pair", "side", "pairs", "`segment` on each scan", "`longitudinal`",
                            "soft volumes (cross-check)"], rows)
    notes = (f"Order swap: the worst |(1 + c12)(1 + c21) - 1| over every pair and side is {s['swap_worst']:.1e} "
             f"(target {t['swap']:g}). Longitudinal error over segment error (mean, both sides): "
             f"{s['zero']['longitudinal_over_segment']:.2f} on the no-change pairs, "
             f"{s['atrophy']['longitudinal_over_segment']:.2f} on the atrophy pairs (target 0.5 or less). "
             f"Targets (issue 24): no change {t['zero_mean']:g} / {t['zero_worst']:g}, atrophy {t['atrophy_mean']:g} / "
             f"{t['atrophy_worst']:g}. Time of a two-scan `longitudinal` run over two `segment --full-head` runs of "
             "its scans timed just before it: "
             f"{s['speed_ratio']['mean']:.2f} on average, {s['speed_ratio']['worst']:.2f} at worst (target 2).")
    return "\n".join([caption, "", table, "", notes])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", nargs="+", default=list(SUBJECTS), choices=SUBJECTS)
    parser.add_argument("--model", default=None, help="what hipposeg segment --model takes (default: the default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)

    from hipposeg.data.manifest import resolve_data_root
    from hipposeg.data.readers import read_image
    from hipposeg.data.writers import write_nifti
    from hipposeg.fullhead.evaluation import move_and_regrid
    from hipposeg.longitudinal import run_longitudinal
    from hipposeg.longitudinal.pipeline import CHANGE_METHOD
    from hipposeg.longitudinal.simulation import NOISE_FRACTION, add_scanner_noise, simulate_atrophy
    from hipposeg.segment import segment_inputs
    from hipposeg.segmenter import load_segmenter

    root = Path(resolve_data_root(args.data_root)) / "fullhead"
    segmenter = load_segmenter(args.model)
    pairs, scans_info = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def segment_scan(path: Path) -> tuple[dict, float]:
            """``hipposeg segment --full-head`` on one scan, run now: its volume row and seconds."""
            t0 = time.perf_counter()
            out = tmp / f"segment_{time.monotonic_ns()}"
            run = segment_inputs([str(path)], out, segmenter, mode="full-head", progress=False, log=print)
            seconds = time.perf_counter() - t0
            if run.failed or not run.rows:
                raise SystemExit(f"{path}: {run.summary()}")
            return run.rows[0], seconds

        # warm-up: imports, template pyramid, first passes (not timed)
        segment_scan(root / args.subjects[0] / "t1.nii.gz")
        for subject in args.subjects:
            folder = root / subject
            image, truth = read_image(folder / "t1.nii.gz"), read_image(folder / "hippocampus_lr.nii.gz")
            rng = np.random.default_rng([args.seed, SUBJECTS.index(subject)])
            noise_rng = np.random.default_rng([args.seed, SUBJECTS.index(subject), 1])  # the moves stay as they were
            scans = {"original": (folder / "t1.nii.gz", {side: 0.0 for side in SIDES}, {})}

            def add(name, img, true_change, info):
                path = tmp / f"{subject}_{name}.nii.gz"
                write_nifti(path, img.array, img.affine, overwrite=True)
                scans[name] = (path, true_change, info)

            for k in (1, 2):
                moved, _, info = move_and_regrid(image, truth, rng, MAX_DEGREES, MAX_MM)
                add(f"moved{k}", add_scanner_noise(moved, noise_rng), {side: 0.0 for side in SIDES},
                    {key: v for key, v in info.items() if key != "move_ras"})
            for left, right in ATROPHY:
                warped, warped_truth, sim = simulate_atrophy(image, truth, {"left": left, "right": right})
                moved, _, info = move_and_regrid(warped, warped_truth, rng, MAX_DEGREES, MAX_MM)
                add(f"atrophy{-left * 100:g}-{-right * 100:g}", add_scanner_noise(moved, noise_rng),
                    sim["true_change"], {**{key: v for key, v in info.items() if key != "move_ras"}, "strength": sim["strength"]})
            scans_info[subject] = {name: {"true_change_pct": {s: 100 * c for s, c in tc.items()}, **info}
                                   for name, (_, tc, info) in scans.items()}
            plan = [("zero", "original", "moved1"), ("zero", "moved1", "moved2")]
            bases = ("original", "moved1", "original")
            plan += [("atrophy", base, name) for base, name in zip(bases, [n for n in scans if n.startswith("atrophy")])]
            for kind, a, b in plan:
                (pa, ta, _), (pb, tb, _) = scans[a], scans[b]
                truth_pct = {s: 100.0 * ((1 + tb[s]) / (1 + ta[s]) - 1.0) for s in SIDES}
                row_a, sec_a = segment_scan(pa)
                row_b, sec_b = segment_scan(pb)
                seg_pct = {s: 100.0 * (row_b[f"volume_{s}_mm3"] / row_a[f"volume_{s}_mm3"] - 1.0) for s in SIDES}
                t0 = time.perf_counter()
                forward = run_longitudinal([pa, pb], tmp / f"lon_{subject}_{a}_{b}", segmenter)
                sec_lon = time.perf_counter() - t0
                backward = run_longitudinal([pb, pa], tmp / f"lon_{subject}_{b}_{a}", segmenter)
                c12 = {s: forward.rows[1][f"change_{s}_pct"] for s in SIDES}
                soft12 = {s: forward.rows[1][f"soft_change_{s}_pct"] for s in SIDES}
                c21 = {s: backward.rows[1][f"change_{s}_pct"] for s in SIDES}
                pair = {
                    "subject": subject, "kind": kind, "scans": [a, b], "true_change_pct": truth_pct,
                    "segment": {"change_pct": seg_pct, "error_pp": {s: seg_pct[s] - truth_pct[s] for s in SIDES},
                                "qc_flags": [row_a.get("qc_flags"), row_b.get("qc_flags")]},
                    "longitudinal": {"change_pct": c12, "error_pp": {s: c12[s] - truth_pct[s] for s in SIDES},
                                     "volumes_mm3": [{s: r[f"volume_{s}_mm3"] for s in SIDES} for r in forward.rows],
                                     "alignment": forward.alignment["pairs"],
                                     "flags": [r["qc_flags"] for r in forward.rows],
                                     "jacobian_pairs": forward.change.get("pairs")},
                    "soft_volume": {"change_pct": soft12, "error_pp": {s: soft12[s] - truth_pct[s] for s in SIDES}},
                    "swap_product_minus_1": {s: (1 + c12[s] / 100) * (1 + c21[s] / 100) - 1.0 for s in SIDES},
                    "seconds": {"segment_a": round(sec_a, 3), "segment_b": round(sec_b, 3),
                                "longitudinal": round(sec_lon, 3), "ratio": round(sec_lon / (sec_a + sec_b), 3),
                                "longitudinal_steps": {k: round(v, 3) for k, v in forward.timings.items()}},
                }
                pairs.append(pair)
                print(f"{subject:9s} {kind:7s} {a:9s} -> {b:14s} true L {truth_pct['left']:+.2f} R "
                      f"{truth_pct['right']:+.2f} | segment L {seg_pct['left']:+.2f} R {seg_pct['right']:+.2f} | "
                      f"longitudinal L {c12['left']:+.2f} R {c12['right']:+.2f} | soft L {soft12['left']:+.2f} R "
                      f"{soft12['right']:+.2f} | swap "
                      f"{max(abs(v) for v in pair['swap_product_minus_1'].values()):.1e} | "
                      f"{sec_lon:.1f} s vs {sec_a + sec_b:.1f} s", flush=True)

    result = {"command": this_command(__file__, argv), "date": time.strftime("%Y-%m-%d %H:%M"),
              **provenance(segmenter), "machine": machine(),
              "method": CHANGE_METHOD,
              "design": {"atrophy_left_right": ATROPHY, "max_degrees": MAX_DEGREES, "max_mm": MAX_MM,
                         "noise_fraction": NOISE_FRACTION, "subjects": args.subjects},
              "targets_pp": TARGETS, "summary": summarise(pairs), "scans": scans_info, "pairs": pairs}
    write_result(args.out, result)
    if Path(args.out).resolve() == DEFAULT_OUT.resolve() and list(args.subjects) == list(SUBJECTS):
        replace_block(README, "longitudinal-table", build_table(result))
    print(json.dumps(result["summary"], indent=1))
    return result


if __name__ == "__main__":
    main()
