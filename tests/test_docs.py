"""One source for every published number: the docs' generated blocks match bench/results (tools/publish_docs.py),
no Dice or time figure is typed outside a block, and every version quoted is the package's. Fast: no model runs."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest

import hipposeg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import publish_docs  # noqa: E402
from doc_blocks import block_names, outside_blocks  # noqa: E402

#: a Dice-like figure (0.7x-0.9xxx), a duration or a size, and an HD95 value
FIGURE = re.compile(r"(?<![\w.])0\.[7-9]\d{1,3}(?!\d)"
                    r"|(?<![\w.])\d+(?:\.\d+)?(?:\s*[-–]\s*\d+(?:\.\d+)?)?\s*(?:s|ms|seconds?|min|minutes?|hours?|MB|GB|GiB)\b"
                    r"|HD95\D{0,25}\d+\.\d+")

#: figures allowed outside generated blocks: (file, the exact text around the figure, why it is not a measurement)
ALLOWED = [
    ("README.md", "2^29 voxels (2 GiB as", "a size limit the reader enforces, not a measurement"),
    ("bundles/hipposeg/docs/README.md", "0.85-1.25 pad/crop scaling", "an augmentation range of train.json"),
    ("bench/README.md", "--minutes 15 --epochs 100   # reference notebook recipe, 15 min budget",
     "a training budget given on the command line"),
    ("bench/README.md", "--minutes 15 --epochs 300      # plain MONAI 3D UNet, 15 min budget",
     "a training budget given on the command line"),
]


def figures_outside_blocks(text: str, allowed: list[str]) -> list[str]:
    """Lines of ``text`` that quote a figure outside the generated blocks (``allowed`` snippets removed first)."""
    found = []
    for line in outside_blocks(text).splitlines():
        for snippet in allowed:
            line = line.replace(snippet, "")
        if FIGURE.search(line):
            found.append(line.strip())
    return found


def test_generated_blocks_match_the_results():
    stale, errors = publish_docs.publish(check=True)
    assert not errors, "blocks that cannot be built:\n" + "\n".join(errors)
    assert not stale, ("stale generated blocks (run `python tools/publish_docs.py`):\n" + "\n".join(stale))


@pytest.mark.parametrize("doc", sorted(publish_docs.DOCS))
def test_no_figure_outside_a_generated_block(doc):
    path = publish_docs.DOCS[doc]
    rel = str(path.relative_to(REPO))
    lines = figures_outside_blocks(path.read_text(), [s for f, s, _ in ALLOWED if f == rel])
    assert not lines, f"{rel}: figures typed by hand (put them in a template of tools/doc_templates):\n" + "\n".join(lines)


def test_the_scan_finds_a_typed_figure_and_ignores_blocks():
    text = "Dice 0.902 held out.\n<!-- x -->\nDice 0.898, 0.38 s\n<!-- /x -->\nIt takes 2.1 s per head.\n"
    assert figures_outside_blocks(text, []) == ["Dice 0.902 held out.", "It takes 2.1 s per head."]
    assert figures_outside_blocks("HD95 1.17 mm", []) == ["HD95 1.17 mm"]
    assert figures_outside_blocks("rotation up to 15 degrees, 20% empty slices, version 0.6.1", []) == []


def test_every_block_has_a_template_and_every_template_a_block():
    for doc, path in publish_docs.DOCS.items():
        names = set(block_names(path.read_text()))
        templates = {p.stem for p in (publish_docs.TEMPLATES / doc).glob("*.md")}
        assert names == templates, f"{doc}: blocks without template {sorted(names - templates)}, " \
                                   f"templates without block {sorted(templates - names)}"


def test_a_changed_result_makes_its_block_stale(tmp_path):
    src = publish_docs.Sources()
    current = publish_docs.DOCS["readme"].read_text()
    _, changed = publish_docs.build_doc("readme", current, src)
    assert "glance" not in changed
    edited = current.replace("<!-- glance -->\n", "<!-- glance -->\n| typed | by hand |\n", 1)
    _, changed = publish_docs.build_doc("readme", edited, src)
    assert "glance" in changed
    # the same block from a results folder whose shipped row scores differently
    results = tmp_path / "results"
    results.mkdir()
    for f in publish_docs.RESULTS.glob("*.json"):
        (results / f.name).write_text(f.read_text())
    shipped = json.loads((results / "shipped.json").read_text())
    shipped["summary"]["dice_whole"]["mean"] = 0.5
    (results / "shipped.json").write_text(json.dumps(shipped))
    body = publish_docs.render("{{ mean shipped dice_whole }}", publish_docs.Sources(results))
    assert body == "0.500"


def test_unknown_placeholders_and_missing_results_are_errors():
    src = publish_docs.Sources()
    with pytest.raises(publish_docs.DocError, match="unknown function"):
        publish_docs.render("{{ nosuch shipped }}", src)
    with pytest.raises(publish_docs.DocError, match="no results file"):
        publish_docs.render("{{ mean no-such-row dice_whole }}", src)
    with pytest.raises(publish_docs.DocError, match="no key"):
        publish_docs.render("{{ json shipped summary.no_such_metric }}", src)


@pytest.mark.parametrize("name", sorted(publish_docs.TABLES))
def test_each_table_builder_runs_on_the_real_results(name):
    table = publish_docs.TABLES[name](publish_docs.Sources())
    assert re.search(r"^\|.*\|$", table, re.M) and re.search(r"^\|\s*-{3}", table, re.M), table[:200]


def test_headline_is_the_held_out_figure_and_fold_0_is_the_shipped_weights():
    src = publish_docs.Sources()
    glance = publish_docs.render((publish_docs.TEMPLATES / "readme" / "glance.md").read_text(), src)
    assert f"**{publish_docs.f_cv(src, 'ensemble', 'dice_whole')}**" in glance
    accuracy = publish_docs.render((publish_docs.TEMPLATES / "readme" / "accuracy.md").read_text(), src)
    rows = [line for line in accuracy.splitlines() if line.startswith("| ")]  # header, then the rows
    assert "held out (the headline)" in rows[1] and "the shipped weights on fold 0" in rows[2]
    assert publish_docs.f_cv(src, "ensemble", "dice_whole") in rows[1]
    assert publish_docs.f_mean(src, "shipped", "dice_whole") in rows[2]


def test_every_version_quoted_is_the_packages():
    version = hipposeg.__version__
    meta = json.loads(publish_docs.METADATA.read_text())
    assert meta["version"] == version
    assert meta["required_packages_version"]["hipposeg"] == version
    assert version in meta["changelog"], "configs/metadata.json: no changelog entry for the package's version"
    assert re.search(rf"^## {re.escape(version)}$", (REPO / "CHANGELOG.md").read_text(), re.M), \
        "CHANGELOG.md: no section for the package's version"
    for path in [*publish_docs.DOCS.values(), REPO / "CHANGELOG.md"]:
        for quoted in re.findall(r"hipposeg v?(\d+\.\d+\.\d+)", path.read_text()):
            assert quoted == version, f"{path.relative_to(REPO)} quotes hipposeg {quoted}, the package is {version}"


def test_model_help_quotes_no_figure():
    from hipposeg.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("segment", "infer", "bids"):
        text = subparsers.choices[name].format_help()
        assert not re.search(r"(?<![\w.])0\.[7-9]\d{1,3}(?!\d)", text), f"hipposeg {name} --help quotes a figure"
        assert "--model" in text
    assert "Shipped models" in " ".join(subparsers.choices["segment"].format_help().split())  # however it wraps
