"""What the bench scripts share: where things are, how a command runs and is shown, paired statistics, the Markdown
block writer, the provenance of the model that ran, and the machine it ran on.

Every bench script is one table: it measures, writes ``bench/results/<name>.json`` and rebuilds its table from that
JSON (``replace_block``), so no figure is typed by hand. Import it as ``from common import ...`` (a bench script's
folder is on ``sys.path`` when it runs; ``tools/`` adds ``bench/`` itself).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
#: checkpoints and logs of bench trainings: outside the checkout by default, so that a training survives a fresh clone
#: and resumes from its last checkpoint (HIPPOSEG_BENCH_RUNS chooses another folder, e.g. bench/runs)
RUNS = Path(os.environ.get("HIPPOSEG_BENCH_RUNS") or Path.home() / ".cache" / "hipposeg" / "bench-runs")
CONFIGS = REPO / "bundles" / "hipposeg" / "configs"

sys.path.insert(0, str(REPO / "tools"))
from doc_blocks import replace_block  # noqa: E402,F401  (one Markdown block writer, atomic; re-exported here)


# ----------------------------------------------------------------------------------------- paths and commands


def shown(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside it (as the READMEs name files), else absolute."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(resolved)


def shown_command(cmd: list[str]) -> str:
    """A ``[sys.executable, ...]`` command as a user types it from the repository root: ``python``, and paths
    inside the repository relative to it."""
    root = str(REPO) + "/"
    return "python " + " ".join(shlex.quote(str(c).replace(root, "")) for c in cmd[1:])


def this_command(script: str | Path, argv: list[str] | None = None) -> str:
    """How the running bench script was called: ``python bench/<script> <arguments>``."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", shown(script), *map(shlex.quote, args)])


def config_arg(names: list[str]) -> str:
    """``--config_file`` of ``python -m monai.bundle run``: one file, or MONAI's list syntax for overlays."""
    return "[" + ",".join(f"'{p}'" for p in names) + "]" if len(names) > 1 else names[0]


def override_args(overrides: dict) -> list[str]:
    """Bundle overrides as ``--key value`` arguments: strings as they are, booleans and None as Python literals
    (``True``/``False``/``None``: ``fire``, which parses MONAI's command line, reads JSON's ``false`` as the string
    "false", which a config's ``$not @key`` takes for true), everything else JSON-encoded."""
    out = []
    for key, value in overrides.items():
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool) or value is None:
            text = repr(value)
        else:
            text = json.dumps(value)
        out += [f"--{key}", text]
    return out


def bundle_command(configs: list[str | Path], overrides: dict) -> list[str]:
    """``python -m monai.bundle run --config_file CONFIGS --key value ...`` with this interpreter."""
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg([str(c) for c in configs]),
            *override_args(overrides)]


def run_logged(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the repository root with its output appended to ``log``; its wall time in seconds. A failed
    command ends the bench with a line naming the log."""
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode:
        sys.exit(f"command failed ({proc.returncode}); see {log}")
    return time.perf_counter() - start


def checkout_version(checkout: str | Path) -> str:
    """``version X (commit C)`` of a hipposeg checkout (its ``hipposeg/__init__.py`` and git HEAD); not
    "hipposeg X": the docs quote only the package's own version."""
    import re

    checkout = Path(checkout)
    match = re.search(r"__version__ = \"([^\"]+)\"", (checkout / "hipposeg" / "__init__.py").read_text())
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return f"version {match.group(1) if match else '?'} (commit {commit or '?'})"


def time_cli(inputs: list[str], options: list[str], *, runs: int = 3, threads: int | None = None,
             baseline: str | Path | None = None, expect_cases: bool = True) -> dict:
    """``hipposeg segment INPUTS --no-qc OPTIONS`` in ``runs`` fresh processes after a warm-up
    (``bench/cli_timing.py``), and the ``baseline`` checkout's alternately; ``threads`` sets ``OMP_NUM_THREADS``
    of every process (torch's intra-op threads, which the ONNX and OpenVINO runtimes also take). The timings, with
    ``baseline_checkout`` naming the baseline (None without one)."""
    from cli_timing import time_segment_cli

    baseline = Path(baseline) if baseline else None
    env = {"OMP_NUM_THREADS": str(threads)} if threads else None
    out = time_segment_cli(inputs, runs=runs, extra=options, baseline=baseline, env=env, expect_cases=expect_cases)
    out["baseline_checkout"] = checkout_version(baseline) if baseline else None
    return out


# ------------------------------------------------------------------------------------------------- results


def write_result(path: str | Path, result: dict) -> Path:
    """A result JSON, written atomically (a killed bench never leaves half a file)."""
    from hipposeg.data.writers import write_text

    return write_text(path, json.dumps(result, indent=1) + "\n", overwrite=True)


def read_result(name_or_path: str | Path, results: Path = RESULTS) -> dict | None:
    """``results/<name>.json`` (or a path), or None when it does not exist."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = results / f"{name_or_path}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def paired(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, int] | None:
    """Mean per-case difference ``a - b`` over the cases both hold (NaN pairs left out), its standard error, and
    the number of pairs; None with fewer than 2 pairs. Case-sampling noise only, not seed-to-seed noise."""
    diffs = [a[c] - b[c] for c in sorted(a) if c in b and a[c] == a[c] and b[c] == b[c]]
    if len(diffs) < 2:
        return None
    mean = sum(diffs) / len(diffs)
    se = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
    return mean, se, len(diffs)


def format_paired(p: tuple[float, float, int] | None, digits: int = 4) -> str:
    """``+0.0155 ± 0.0016`` (``–`` for None)."""
    return "–" if p is None else f"{p[0]:+.{digits}f} ± {p[1]:.{digits}f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: a header row, its rule, and one line per row (cells as given, turned into text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ provenance and machine


def provenance(segmenter) -> dict[str, str | None]:
    """The networks a segmenter actually loaded, as the reports name them: ``{"model": core checkpoint,
    "model_3d": the 3D partner's or None}`` (repo-relative where they lie in the repository); the same keys
    as ``volumes.csv``."""
    from hipposeg.segment import model_identity

    return {key: shown(value) if value else None for key, value in model_identity(segmenter).items()}


def runtime_label(segmenter) -> str:
    """What ran the networks, as the reports write it: the runtime, with `` int8`` when OpenVINO ran the core's int8
    copy (``openvino int8``)."""
    return f"{segmenter.runtime} int8" if getattr(segmenter, "precision", "float32") == "int8" else segmenter.runtime


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines()) if k.strip()}


def machine() -> dict:
    """The CPU a measurement ran on: model name, the cores this process may use, and the widest vector
    instruction set (avx512 / avx2 / avx / the architecture), plus torch's thread count when torch is loaded."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    isa = ("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "avx" if "avx" in flags
           else platform.machine())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"cpu": info.get("model name") or platform.processor() or platform.machine(), "cores": cores, "isa": isa}
    if "torch" in sys.modules:
        out["torch_threads"] = sys.modules["torch"].get_num_threads()
    return out


def describe_machine(m: dict) -> str:
    """``Intel(R) Xeon(R) ..., 2 cores, avx512`` for a table's caption."""
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('isa', '?')}"
