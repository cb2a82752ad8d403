"""Cohort bench: whole-head images per hour through the BIDS App, one process vs torch's distributed engine, and
the eTIV of the three whole-head test scans and of moved, regridded copies of them.

    python bench/cohort.py                      # writes bench/results/cohort.json and the tables in bench/README.md
    python bench/cohort.py --copies 1           # fewer moved copies per head (faster)

A BIDS dataset is built in a temporary folder from ../shared/data/fullhead: each head (bert, candi030, colin27) as
``sub-<head>/ses-orig`` and ``--copies`` moved copies per head (random rigid motion up to 20 degrees / 25 mm,
random orientation code and voxel size, as in ``bench/fullhead.py``) as further sessions. Then, on this machine:

1. ``python -m hipposeg bids DS OUT participant`` (one process, torch's default threads), wall time;
2. ``torchrun --standalone --nproc_per_node 2 -m hipposeg bids DS OUT participant --distributed`` (2 ranks, one
   thread each, gloo), wall time; rank 0 writes the group table;
3. eTIV, the independent intracranial-mask estimate and their ratio per image (from the group table), the spread
   of eTIV over each head's copies (the issue asks for <= 1 %), and the adult range the QC checks against.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import BENCH, describe_machine, machine, replace_block, this_command, write_result

HEADS = ("bert", "candi030", "colin27")


def build_dataset(root: Path, copies: int, seed: int = 0) -> None:
    import nibabel as nib

    from hipposeg.data.manifest import resolve_data_root
    from hipposeg.data.readers import read_image
    from hipposeg.fullhead.evaluation import move_and_regrid

    data = resolve_data_root() / "fullhead"
    rng = np.random.default_rng(seed)
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "hipposeg cohort bench", "BIDSVersion": "1.9.0"}))
    for head in HEADS:
        image, truth = read_image(data / head / "t1.nii.gz"), read_image(data / head / "hippocampus_lr.nii.gz")
        anat = root / f"sub-{head}" / "ses-orig" / "anat"
        anat.mkdir(parents=True)
        os.symlink(data / head / "t1.nii.gz", anat / f"sub-{head}_ses-orig_T1w.nii.gz")
        for k in range(copies):
            moved, _, info = move_and_regrid(image, truth, rng)
            anat = root / f"sub-{head}" / f"ses-moved{k + 1}" / "anat"
            anat.mkdir(parents=True)
            nib.save(nib.Nifti1Image(moved.array.astype(np.float32), moved.affine),
                     str(anat / f"sub-{head}_ses-moved{k + 1}_T1w.nii.gz"))


def timed(cmd: list[str], env: dict | None = None) -> float:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return wall


def etiv_table(group_json: Path) -> list[dict]:
    rows = json.loads(group_json.read_text())
    return [{"image": r["case"], "etiv_cm3": r["etiv_mm3"] / 1000, "icv_mask_cm3": r["icv_mask_mm3"] / 1000,
             "ratio": r["icv_mask_mm3"] / r["etiv_mm3"], "qc_flags": r.get("qc_flags") or ""} for r in rows]


def build_tables(result: dict) -> str:
    """The throughput and eTIV tables of one run (``bench/README.md``, block ``cohort-table``)."""
    t = result["throughput"]
    where = describe_machine(result["machine"]) if isinstance(result["machine"], dict) else result["machine"]
    lines = [f"{result['n_images']} whole-head images ({len(HEADS)} heads + {result['copies']} moved copies each), "
             f"{where}, {result['date']}; `{result['command']}`:", "",
             "| run | wall (s) | images per hour |", "|---|---|---|"]
    for key, label in (("one_process", "`hipposeg bids ... participant` (1 process)"),
                       ("torchrun_2", "`torchrun --nproc_per_node 2 -m hipposeg bids ... --distributed`")):
        lines.append(f"| {label} | {t[key]['wall_s']:.1f} | {t[key]['images_per_hour']:.0f} |")
    lo, hi = result["adult_etiv_range_cm3"]
    lines += ["", f"eTIV per image (adult range checked by QC: {lo:.0f}-{hi:.0f} cm³; `mask/eTIV` is the independent "
                  f"intracranial-mask estimate over eTIV, flagged beyond ±{result['agreement_tolerance']:.0%}):", "",
              "| image | eTIV cm³ | mask cm³ | mask/eTIV | QC flags |", "|---|---|---|---|---|"]
    for r in result["etiv"]:
        lines.append(f"| {r['image']} | {r['etiv_cm3']:.0f} | {r['icv_mask_cm3']:.0f} | {r['ratio']:.3f} | "
                     f"{r['qc_flags'] or '–'} |")
    lines += ["", "eTIV of the moved, regridded copies against the original scan: "
              + "; ".join(f"{h} max {v * 100:.2f} %" for h, v in result["etiv_max_relative_change"].items())
              + " (the issue allows 1 %)."]
    return "\n".join(lines)


def write_tables(result: dict) -> None:
    replace_block(BENCH / "README.md", "cohort-table", build_tables(result))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2, help="moved copies per head (default 2)")
    parser.add_argument("--out", default=str(BENCH / "results" / "cohort.json"))
    args = parser.parse_args(argv)
    from hipposeg.fullhead.icv import ADULT_ETIV_RANGE_MM3, AGREEMENT_TOLERANCE

    with tempfile.TemporaryDirectory(prefix="hipposeg_cohort_") as tmp:
        ds = Path(tmp) / "ds"
        build_dataset(ds, args.copies)
        n = len(list(ds.rglob("*_T1w.nii.gz")))
        one = timed([sys.executable, "-m", "hipposeg", "bids", str(ds), f"{tmp}/out1", "participant", "--quiet"])
        two = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                     "hipposeg", "bids", str(ds), f"{tmp}/out2", "participant", "--distributed", "--quiet"],
                    env={"OMP_NUM_THREADS": "1"})
        etiv = etiv_table(Path(tmp) / "out2" / "group_volumes.json")
    change = {}
    for head in HEADS:
        values = {r["image"]: r["etiv_cm3"] for r in etiv if r["image"].startswith(f"sub-{head}_")}
        base = values.pop(f"sub-{head}_ses-orig")
        change[head] = max((abs(v / base - 1) for v in values.values()), default=0.0)
    result = {
        "command": this_command(__file__, argv),
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
        "copies": args.copies, "n_images": n,
        "throughput": {"one_process": {"wall_s": round(one, 1), "images_per_hour": round(3600 * n / one, 1)},
                       "torchrun_2": {"wall_s": round(two, 1), "images_per_hour": round(3600 * n / two, 1)}},
        "etiv": etiv, "etiv_max_relative_change": change,
        "adult_etiv_range_cm3": [v / 1000 for v in ADULT_ETIV_RANGE_MM3], "agreement_tolerance": AGREEMENT_TOLERANCE,
        "note": "wall times include starting Python, importing torch/MONAI and loading the model once per process",
    }
    write_result(args.out, result)
    write_tables(result)
    print(json.dumps({k: result[k] for k in ("throughput", "etiv_max_relative_change")}, indent=1))
    return result


if __name__ == "__main__":
    main()
