"""Rewrite the generated part of a Markdown file: the text between a pair of HTML-comment markers."""

from __future__ import annotations

from pathlib import Path


def replace_block(path: Path, name: str, body: str) -> bool:
    """Put ``body`` between ``<!-- name -->`` and ``<!-- /name -->`` in ``path``; False (file untouched) when the
    markers are not there."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = path.read_text() if path.is_file() else ""
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{body}\n{end}{tail}")
    return True
