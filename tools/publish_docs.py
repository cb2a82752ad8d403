"""Every published number from one source: fill the docs' generated blocks from ``bench/results/*.json``.

    python tools/publish_docs.py            # rewrite every stale block (and metadata.json's generated fields)
    python tools/publish_docs.py --check    # change nothing; exit 1 listing the stale blocks

A generated block is the text between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in one of :data:`DOCS`
(``tools/doc_blocks.py``). Block NAME of doc DOC is rendered from the template ``tools/doc_templates/DOC/NAME.md``:
Markdown in which ``{{ function arg ... }}`` is replaced by a figure read from ``bench/results`` (functions below,
:data:`FUNCTIONS`). A block with no template is an error, so every figure between markers has a source; the test
``tests/test_docs.py`` fails when a block is stale and when a Dice or time figure is typed outside a block.

Placeholders (ROW is a results file ``bench/results/ROW.json`` written by ``bench/accuracy.py``; METRIC a key of
its ``summary``: ``dice_whole``, ``dice_anterior``, ``dice_posterior``, ``hd95_whole_mm``, ``abs_volume_error_mm3``):

    version                          hipposeg.__version__
    mean ROW METRIC [DIGITS]         per-volume mean (Dice 3 digits, HD95 2, mm³ 0)
    median ROW METRIC [DIGITS]       per-volume median
    n ROW                            number of volumes scored
    volerr ROW / volsigned ROW       mean absolute / signed volume error, % of the true volume ("4.4" / "+0.5")
    paired ROW BASE [METRIC] [DIGITS]  paired per-volume difference ROW - BASE ± its standard error
    case ROW CASE METRIC [DIGITS]    one volume's value
    cv RECIPE METRIC [DIGITS]        cross-validation: the held-out folds pooled per volume (RECIPE: core, partner,
                                     ensemble, unet3d; METRIC as above, or volerr, volsigned, n)
    cv_paired RECIPE BASE            paired whole-Dice difference over the pooled held-out volumes
    json FILE KEY [FORMAT]           any value: KEY a dotted path (list indices as numbers), FORMAT a format spec
    minutes FILE KEY [DIGITS]        a value in seconds, shown in minutes
    minmax FILE LIST FIELD FORMAT    "lowest-highest" of FIELD over the list at LIST
    crop_seconds FILE [DIGITS]       median seconds per crop end to end, from a bench/speed.py result
    machine FILE                     the machine a timing was measured on (CPU model when the file records one)
    lit KEY [FORMAT]                 a figure the project quotes but did not measure (bench/results/literature.json)
    table NAME                       a table built from the results (:data:`TABLES`)

``configs/metadata.json`` gets its ``description`` from ``tools/doc_templates/metadata/description.md`` (one
paragraph), ``eval_metrics`` from ``bench/results/shipped.json``, and ``version`` and
``required_packages_version.hipposeg`` from ``hipposeg.__version__``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
RESULTS = REPO / "bench" / "results"
TEMPLATES = TOOLS / "doc_templates"
BUNDLE = REPO / "bundles" / "hipposeg"
DOCS = {"readme": REPO / "README.md", "bench": REPO / "bench" / "README.md", "bundle": BUNDLE / "docs" / "README.md"}
METADATA = BUNDLE / "configs" / "metadata.json"

sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(REPO / "bench"))
from doc_blocks import block_names, fill_block, read_block  # noqa: E402

PLACEHOLDER = re.compile(r"\{\{\s*(.+?)\s*\}\}")


class DocError(ValueError):
    """A template that cannot be filled: unknown function, missing results file or key."""


def _bench(name: str):
    """A bench script as a module (its table builders and paired statistics)."""
    import importlib

    return importlib.import_module(name)


class Sources:
    """The results files, each read once per run."""

    def __init__(self, results: Path = RESULTS):
        self.dir = Path(results)
        self._cache: dict[str, dict] = {}

    def load(self, name: str) -> dict:
        name = name if name.endswith(".json") else f"{name}.json"
        if name not in self._cache:
            path = self.dir / name
            if not path.is_file() and (self.dir.parent / "archive" / name).is_file():
                path = self.dir.parent / "archive" / name  # a frozen one-off's results, kept beside its script
            if not path.is_file():
                raise DocError(f"no results file {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
            self._cache[name] = json.loads(path.read_text())
        return self._cache[name]


# --- formatting ---------------------------------------------------------------------------------------------------

def _digits(metric: str, digits: str | int | None = None) -> int:
    if digits is not None:
        return int(digits)
    return 2 if metric.startswith("hd95") else 0 if metric.endswith("mm3") else 3


def _get(data, key: str):
    """``data`` at the dotted path ``key`` (list indices as numbers; a dict key that holds dots is matched whole)."""
    parts = key.split(".")
    while parts:
        for n in range(len(parts), 0, -1):  # the longest run of parts that is a key
            part = ".".join(parts[:n])
            if isinstance(data, dict) and part in data:
                data, parts = data[part], parts[n:]
                break
        else:
            try:
                data, parts = data[int(parts[0])], parts[1:]
            except (IndexError, ValueError, TypeError, KeyError):
                raise DocError(f"no key {key!r}") from None
    return data


def _pm(a: dict[str, float], b: dict[str, float], digits: int = 4) -> str:
    """The paired per-volume difference ``a - b`` ± its standard error (bench/common.py's statistics)."""
    common = _bench("common")
    p = common.paired(a, b)
    if p is None:
        raise DocError("fewer than two paired volumes")
    return common.format_paired(p, digits)


# --- the placeholder functions --------------------------------------------------------------------------------------

def f_version(src: Sources) -> str:
    import hipposeg

    return hipposeg.__version__


def f_mean(src: Sources, row: str, metric: str, digits=None, stat: str = "mean") -> str:
    value = _get(src.load(row), f"summary.{metric}.{stat}")
    return f"{value:.{_digits(metric, digits)}f}"


def f_median(src: Sources, row: str, metric: str, digits=None) -> str:
    return f_mean(src, row, metric, digits, stat="median")


def f_n(src: Sources, row: str) -> str:
    return str(len(src.load(row)["per_case_dice_whole"]))


def _volume_errors(result: dict) -> tuple[float, float]:
    """(mean absolute, mean signed) volume error in % (bench/accuracy.py's ``volume_errors_percent``)."""
    errors = _bench("accuracy").volume_errors_percent(result)
    if errors is None:
        raise DocError("no per-case volumes")
    return errors


def f_volerr(src: Sources, row: str) -> str:
    return f"{_volume_errors(src.load(row))[0]:.1f}"


def f_volsigned(src: Sources, row: str) -> str:
    return f"{_volume_errors(src.load(row))[1]:+.1f}"


def f_paired(src: Sources, row: str, base: str, metric: str = "dice_whole", digits=4) -> str:
    a, b = (_get(src.load(r), f"per_case_{metric}") for r in (row, base))
    return _pm(a, b, int(digits))


def f_case(src: Sources, row: str, case: str, metric: str, digits=None) -> str:
    return f"{_get(src.load(row), f'per_case_{metric}.{case}'):.{_digits(metric, digits)}f}"


#: placeholder names of the cross-validation recipes (bench/accuracy.py's CV_RECIPES)
CV_NAMES = {"core": "2.5D core (train.json), the default", "partner": "3D partner alone (train_3d.json)",
            "ensemble": "core + partner, 1:1 (--model ensemble)", "unet3d": "plain 3D UNet (baseline)"}


def cv_rows(src: Sources, recipe: str, folds=None) -> list[dict]:
    """The results of a cross-validation recipe on ``folds`` (default: the held-out folds), each with its fold."""
    acc = _bench("accuracy")
    if recipe not in CV_NAMES:
        raise DocError(f"unknown recipe {recipe!r} (one of {', '.join(CV_NAMES)})")
    rows = acc.CV_RECIPES[CV_NAMES[recipe]]
    return [{**src.load(rows[f]), "fold": f} for f in (acc.HELD_OUT_FOLDS if folds is None else folds)]


def f_cv(src: Sources, recipe: str, metric: str, digits=None) -> str:
    acc = _bench("accuracy")
    rows = cv_rows(src, recipe)
    if metric == "n":
        return str(len(acc._pooled(rows, "dice_whole")))
    if metric in ("volerr", "volsigned"):
        abs_, signed = _volume_errors({f"per_case_{m}": acc._pooled(rows, m)
                                       for m in ("volume_pred_mm3", "volume_true_mm3")})
        return f"{abs_:.1f}" if metric == "volerr" else f"{signed:+.1f}"
    values = [v for v in acc._pooled(rows, metric).values() if v == v]
    if not values:
        raise DocError(f"no per-case {metric} in recipe {recipe}")
    return f"{sum(values) / len(values):.{_digits(metric, digits)}f}"


def f_cv_paired(src: Sources, recipe: str, base: str) -> str:
    acc = _bench("accuracy")
    a, b = (acc._pooled(cv_rows(src, r), "dice_whole") for r in (recipe, base))
    return _pm(a, b)


def f_json(src: Sources, file: str, key: str, fmt: str = "") -> str:
    return format(_get(src.load(file), key), fmt)


def f_minutes(src: Sources, file: str, key: str, digits=0) -> str:
    return f"{_get(src.load(file), key) / 60:.{int(digits)}f}"


def f_minmax(src: Sources, file: str, key: str, field: str, fmt: str = "") -> str:
    values = [_get(item, field) for item in _get(src.load(file), key)]
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}"


def machine(result: dict) -> str:
    """Where a timing was measured, from what its results file records: ``machine`` as bench/common.py's
    ``machine()`` writes it (CPU model, cores, instruction set), or the older free-text fields."""
    if isinstance(result.get("machine"), dict):
        return _bench("common").describe_machine(result["machine"])
    cpu = result.get("cpu") or result.get("cpu_model")
    if isinstance(cpu, dict):
        cpu = cpu.get("model") or cpu.get("name")
    where = result.get("machine") or result.get("device_name") or "machine not recorded"
    cores = result.get("cpu_count")
    text = where if cores is None or "core" in str(where) else f"{where}, {cores} CPU cores"
    return f"{cpu}, {text}" if cpu else f"{text}; CPU model not recorded"


def crop_seconds(result: dict) -> float:
    """Median seconds per crop end to end, from a ``bench/speed.py`` result of either format (``end_to_end`` of
    the engine-timing version, or the older top-level ``median_end_to_end_s``)."""
    value = result.get("end_to_end", {}).get("median_end_to_end_s", result.get("median_end_to_end_s"))
    if value is None:
        raise DocError("no median_end_to_end_s")
    return value


def f_crop_seconds(src: Sources, file: str, digits=2) -> str:
    return f"{crop_seconds(src.load(file)):.{int(digits)}f}"


def f_machine(src: Sources, file: str) -> str:
    return machine(src.load(file))


def f_lit(src: Sources, key: str, fmt: str = "") -> str:
    return format(_get(src.load("literature"), key), fmt)


def f_table(src: Sources, name: str) -> str:
    if name not in TABLES:
        raise DocError(f"unknown table {name!r} (one of {', '.join(TABLES)})")
    return TABLES[name](src)


FUNCTIONS = {"version": f_version, "mean": f_mean, "median": f_median, "n": f_n, "volerr": f_volerr,
             "volsigned": f_volsigned, "paired": f_paired, "case": f_case, "cv": f_cv, "cv_paired": f_cv_paired,
             "json": f_json, "minutes": f_minutes, "minmax": f_minmax, "machine": f_machine, "crop_seconds": f_crop_seconds, "lit": f_lit, "table": f_table}


# --- tables ---------------------------------------------------------------------------------------------------------

#: the shipped models by their --model name: (fold-0 results row, cross-validation recipe or None, speed file or None)
SHIPPED = {"default": ("shipped", "core", "speed"), "ensemble": ("shipped-ensemble", "ensemble", "speed_ensemble"),
           "hires": ("shipped-hires", None, "speed_hires"), "default-0.5": ("shipped-0.5", None, None)}
ALIASES = {"core": "default"}


def table_shipped_models(src: Sources) -> str:
    """One row per name ``--model`` takes: its files, fold-0 and held-out accuracy, seconds per crop."""
    from hipposeg.bundle import SHIPPED_MODELS

    lines = ["| `--model` | files in `models/` | fold 0: Dice whole / anterior / posterior, HD95 mm "
             "(`python bench/accuracy.py --row ROW`) | its recipe held out (folds 1+2 pooled): Dice whole, HD95 mm | "
             "seconds per crop (median) |", "|---|---|---|---|---|"]
    for name, (core, partner) in SHIPPED_MODELS.items():
        files = f"`{core}`" + (f" + `{partner}`" if partner else "")
        if name in ALIASES:
            lines.append(f"| `{name}` | {files} | another name of `{ALIASES[name]}`: the same model | | |")
            continue
        if name not in SHIPPED:
            raise DocError(f"shipped model {name!r} has no results row in tools/publish_docs.py SHIPPED")
        row, recipe, speed = SHIPPED[name]
        fold0 = (f"{f_mean(src, row, 'dice_whole')} / {f_mean(src, row, 'dice_anterior')} / "
                 f"{f_mean(src, row, 'dice_posterior')}, {f_mean(src, row, 'hd95_whole_mm')} (`{row}`)")
        held = (f"{f_cv(src, recipe, 'dice_whole')}, {f_cv(src, recipe, 'hd95_whole_mm')}" if recipe
                else "not cross-validated")
        secs = f"{crop_seconds(src.load(speed)):.2f}" if speed else "not measured"
        lines.append(f"| `{name}` | {files} | {fold0} | {held} | {secs} |")
    return "\n".join(lines)


def table_speed(src: Sources) -> str:
    """bench/speed.py's own table (``speed_table``) of its results (``TABLE_RESULTS``)."""
    speed = _bench("speed")
    results = {name: src.load(file) for name, file in speed.TABLE_RESULTS.items()}
    return speed.speed_table({name: r for name, r in results.items() if r})


def table_input_scale_cost(src: Sources) -> str:
    r = src.load("input_scale_cost")
    lines = [f"`{r['command']}` ({machine(r)}, {r['threads']} threads, torch {r['torch']}; batch {r['batch']}, "
             f"{r['slices_per_direction']} slices per direction):", "",
             "| input scale | weights | slice (px) | training step (s) | vs 1x usual layout | inference, one direction "
             "(s) | vs 1x usual layout |", "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['input_scale']:g}x | {'channels-last' if row['channels_last'] else 'usual layout'} | "
                     f"{row['slice_px']} | {row['train_step_s']:.3f} | {row['train_cost_vs_1x']:.2f} | "
                     f"{row['inference_per_direction_s']:.3f} | {row['inference_cost_vs_1x']:.2f} |")
    return "\n".join(lines)


def table_gpu_throughput(src: Sources) -> str:
    return src.load("gpu_throughput")["markdown"].strip()


def _markdown_file(name: str):
    def build(src: Sources) -> str:
        path = src.dir / name
        if not path.is_file():
            raise DocError(f"no results file {name}")
        lines = path.read_text().strip().splitlines()
        while lines and (lines[0].startswith("# ") or not lines[0].strip()):  # the file's own title
            lines.pop(0)
        return "\n".join(lines)
    return build


def table_learning_curve(src: Sources) -> str:
    pairs = [("2.5D core", "default-3of5", "default-thick"), ("3D partner", "unet3d-partner-3of5", "unet3d-partner"),
             ("ensemble, the default's recipe", "default+partner-3of5", "default-thick+partner")]
    lines = ["| fold 0, 42 volumes | 124 cases (3/5) | 166 cases (4/5) | paired Δ whole (166 - 124) | "
             "Δ anterior / posterior | Δ HD95 mm | Δ abs. volume error mm³ | volume error % abs. / signed (124 -> 166) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, small, full in pairs:
        lines.append(
            f"| {label} (`{small}` -> `{full}`) | {f_mean(src, small, 'dice_whole')} | {f_mean(src, full, 'dice_whole')} | "
            f"{f_paired(src, full, small)} | {f_paired(src, full, small, 'dice_anterior', 3).split(' ')[0]} / "
            f"{f_paired(src, full, small, 'dice_posterior', 3).split(' ')[0]} | "
            f"{f_paired(src, full, small, 'hd95_whole_mm', 2).split(' ')[0]} | "
            f"{f_paired(src, full, small, 'abs_volume_error_mm3', 0)} | "
            f"{f_volerr(src, small)} / {f_volsigned(src, small)} -> {f_volerr(src, full)} / {f_volsigned(src, full)} |")
    return "\n".join(lines)


def table_thick_phase(src: Sources) -> str:
    lines = ["| first slice starts | thick-copy Dice | 1 mm Dice on the thick grid | mean loss (worst) |",
             "|---|---|---|---|"]
    for path in sorted(src.dir.glob("thick_phase_ax2_2mm_*.json")):
        r = src.load(path.name)
        (cell,) = r["summary"]
        lines.append(f"| {r['phase_mm']:.1f} mm inside the crop | {cell['mean_dice_thick']:.3f} | "
                     f"{cell['mean_dice_1mm']:.3f} | {cell['mean_loss']:.3f} ({cell['max_loss']:.2f}) |")
    return "\n".join(lines)


def _bench_table(script: str, builder: str, *args) -> str:
    """The table a bench script writes into its block, built by the script itself (it stays the one place its
    table is built): its ``builder(*args)`` when it has one, else its block writer run with the writer's
    ``replace_block`` swapped for one that keeps the text."""
    module = _bench(script)
    try:
        if hasattr(module, builder):
            return getattr(module, builder)(*args)
        kept: list[str] = []
        saved = module.replace_block
        module.replace_block = lambda path, name, body: kept.append(body) or True
        try:
            getattr(module, {"build_table": "write_table", "build_tables": "write_tables"}[builder])(*args)
        finally:
            module.replace_block = saved
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise DocError(f"bench/{script}.py could not build its table from its results: {type(e).__name__} {e}") from None
    if len(kept) != 1:
        raise DocError(f"bench/{script}.py wrote {len(kept)} blocks, not 1")
    return kept[0]


TABLES = {
    "shipped_models": table_shipped_models,
    "speed": table_speed,
    "input_scale_cost": table_input_scale_cost,
    "gpu_throughput": table_gpu_throughput,
    "gpu_ablation": _markdown_file("gpu_ablation.md"),
    "gpu_input_scale": _markdown_file("gpu_input_scale.md"),
    "learning_curve": table_learning_curve,
    "thick_phase": table_thick_phase,
    "accuracy": lambda src: _bench("accuracy").build_table(),
    "cv": lambda src: _bench("accuracy").build_cv_table(),
    "fullhead": lambda src: _bench_table("fullhead", "build_table", src.load("fullhead")),
    "fullhead_hires": lambda src: _bench_table("fullhead", "build_table", src.load("fullhead_hires")),
    "thick_slices": lambda src: _bench_table("thick_slices", "build_table", src.dir),
    "cohort": lambda src: _bench_table("cohort", "build_tables", src.load("cohort")),
    "longitudinal": lambda src: _bench_table("longitudinal", "build_table", src.load("longitudinal")),
    "robustness": lambda src: _bench_table("robustness", "build_table", src.load("robustness")),
    "robustness_confidence": lambda src: _bench_table("robustness", "build_confidence_table", src.load("robustness")),
    "robustness_ensemble": lambda src: _bench_table("robustness", "build_table", src.load("robustness-ensemble")),
    "robustness_ensemble_confidence": lambda src: _bench_table("robustness", "build_confidence_table",
                                                               src.load("robustness-ensemble")),
}


# --- rendering ------------------------------------------------------------------------------------------------------

def render(template: str, src: Sources, where: str = "template") -> str:
    """``template`` with every ``{{ function arg ... }}`` replaced by its value."""
    def fill(m: re.Match) -> str:
        fn, *args = shlex.split(m.group(1))
        if fn not in FUNCTIONS:
            raise DocError(f"{where}: unknown function {fn!r} in {m.group(0)}")
        try:
            return FUNCTIONS[fn](src, *args)
        except DocError as e:
            raise DocError(f"{where}: {m.group(0)}: {e}") from None
        except TypeError as e:
            raise DocError(f"{where}: {m.group(0)}: wrong arguments ({e})") from None
    return PLACEHOLDER.sub(fill, template).strip("\n")


def template_path(doc: str, name: str) -> Path:
    return TEMPLATES / doc / f"{name}.md"


def build_doc(doc: str, text: str, src: Sources, errors: list[str] | None = None) -> tuple[str, list[str]]:
    """``text`` (doc ``doc``) with every block rendered from its template, and the names of the blocks that
    changed. A block that cannot be built is left as it is and its error appended to ``errors`` (raised when
    ``errors`` is None)."""
    changed = []
    for name in block_names(text):
        path = template_path(doc, name)
        try:
            if not path.is_file():
                raise DocError(f"{DOCS[doc].relative_to(REPO)}: block {name!r} has no template "
                               f"{path.relative_to(REPO)}")
            body = render(path.read_text(), src, str(path.relative_to(REPO)))
        except DocError as e:
            if errors is None:
                raise
            errors.append(str(e))
            continue
        if read_block(text, name) != body:
            changed.append(name)
            text = fill_block(text, name, body)
    return text, changed


def build_metadata(meta: dict, src: Sources) -> dict:
    """metadata.json with its generated fields: description, eval_metrics, the version."""
    import hipposeg

    s = src.load("shipped")["summary"]
    path = TEMPLATES / "metadata" / "description.md"
    description = " ".join(render(path.read_text(), src, str(path.relative_to(REPO))).split())
    eval_metrics = {f"mean_{key}": round(s[key]["mean"], 4)
                    for key in ("dice_whole", "dice_anterior", "dice_posterior", "hd95_whole_mm")}
    out = {**meta, "version": hipposeg.__version__, "description": description, "eval_metrics": eval_metrics}
    out["required_packages_version"] = {**meta.get("required_packages_version", {}), "hipposeg": hipposeg.__version__}
    return out


def metadata_text(meta: dict) -> str:
    return json.dumps(meta, indent=4, ensure_ascii=False) + "\n"


def publish(check: bool = False, results: Path = RESULTS) -> tuple[list[str], list[str]]:
    """Rebuild every generated block and metadata.json's generated fields. Return ``file: block`` for each that
    was stale, and the errors of the blocks that could not be built (left untouched). With ``check`` nothing is
    written."""
    from hipposeg.data.writers import write_text

    src, stale, errors, writes = Sources(results), [], [], {}
    for doc, path in DOCS.items():
        text, changed = build_doc(doc, path.read_text(), src, errors)
        stale += [f"{path.relative_to(REPO)}: {name}" for name in changed]
        if changed:
            writes[path] = text
    meta = json.loads(METADATA.read_text())
    try:
        new = build_metadata(meta, src)
    except DocError as e:
        errors.append(str(e))
        new = meta
    fields = [k for k in new if new[k] != meta.get(k)]
    if fields or metadata_text(new) != METADATA.read_text():
        stale += [f"{METADATA.relative_to(REPO)}: {', '.join(fields) or 'formatting'}"]
        writes[METADATA] = metadata_text(new)
    if not check:
        for path, text in writes.items():
            write_text(path, text, overwrite=True)
    return stale, errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 listing the stale blocks")
    args = parser.parse_args(argv)
    stale, errors = publish(check=args.check)
    for item in stale:
        print(("stale: " if args.check else "rewrote: ") + item)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 2 if errors else 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
