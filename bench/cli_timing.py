"""Time ``hipposeg segment`` as a user runs it: a fresh process per run, against an older version back to back.

:func:`time_segment_cli` runs ``python -m hipposeg segment INPUTS -o <new folder> --no-qc [extra]`` ``runs`` times
(after one warm-up, which also builds any cached export), each in a new process, and reads two figures per run:
the process's wall seconds (start-up included) and the median seconds per case that ``hipposeg segment`` prints
(``N segmented ..., X s per case (median)``: the work per case once the model is loaded). Given ``baseline``, a
checkout of another version (``git worktree add /tmp/hipposeg-0.6.1 <commit>``: its own package and bundle), the
same command runs there with the same Python, alternately (new, old, new, old, ...), so that a drift of the machine
hits both; the ratios are taken pair by pair.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO

PER_CASE = re.compile(r"([0-9.]+) s per case \(median\)")


def run_segment(inputs: list[str], out: Path, *, checkout: Path = REPO, extra: list[str] = (),
                env: dict[str, str] | None = None) -> dict:
    """One ``hipposeg segment`` process in ``checkout`` (``env``: variables added to this process's environment):
    its wall seconds and the per-case median it printed."""
    cmd = [sys.executable, "-m", "hipposeg", "segment", *inputs, "-o", str(out), "--no-qc", "--quiet", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    match = PER_CASE.search(done.stdout)
    return {"wall_s": wall, "per_case_s": float(match.group(1)) if match else None, "exit": done.returncode,
            "stderr": done.stderr[-400:] if done.returncode not in (0, 2) or not match else ""}


def time_segment_cli(inputs: list[str], *, runs: int = 3, extra: list[str] = (), baseline: Path | None = None,
                     env: dict[str, str] | None = None, expect_cases: bool = True) -> dict:
    """Median wall seconds and per-case seconds of ``hipposeg segment`` over ``runs`` fresh processes (and of the
    ``baseline`` checkout's, alternately, with the pairwise ratios old / new)."""
    new, old = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs + 1):
            new.append(run_segment(inputs, Path(tmp) / f"new{i}", extra=extra, env=env))
            if baseline is not None:
                old.append(run_segment(inputs, Path(tmp) / f"old{i}", checkout=baseline, extra=_without_runtime(extra),
                                       env=env))
    for r in new + old:
        if expect_cases and r["per_case_s"] is None:
            raise SystemExit(f"hipposeg segment did not finish its cases: {r['stderr']}")
    new, old = new[1:], old[1:]  # the first pair warms the caches (files, exported networks)
    out = {"n_inputs": len(inputs), "runs": runs, "wall_s": _median(new, "wall_s"),
           "per_case_s": _median(new, "per_case_s"), "wall_per_input_s": _median(new, "wall_s") / len(inputs)}
    if baseline is not None:
        out["baseline"] = {"wall_s": _median(old, "wall_s"), "per_case_s": _median(old, "per_case_s"),
                           "wall_per_input_s": _median(old, "wall_s") / len(inputs)}
        out["speed_up_wall"] = statistics.median(o["wall_s"] / n["wall_s"] for n, o in zip(new, old))
        if expect_cases:
            out["speed_up_per_case"] = statistics.median(o["per_case_s"] / n["per_case_s"] for n, o in zip(new, old))
    return out


def _without_runtime(extra) -> list[str]:
    """``extra`` without ``--runtime VALUE`` (an option older versions do not have)."""
    out, skip = [], False
    for arg in extra:
        if skip or arg == "--runtime":
            skip = arg == "--runtime"
            continue
        out.append(arg)
    return out


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else None
