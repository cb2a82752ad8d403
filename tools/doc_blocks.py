"""Generated blocks of a Markdown file: the text between ``<!-- NAME -->`` and ``<!-- /NAME -->``.

One implementation (:func:`replace_block`) for ``tools/publish_docs.py`` and the bench scripts (through
``bench/common.py``). Files are rewritten atomically (``hipposeg.data.writers.write_text``).
"""

from __future__ import annotations

import re
from pathlib import Path

from hipposeg.data.writers import write_text

#: a block: ``<!-- name -->`` ... ``<!-- /name -->`` (names: letters, digits, ``-`` and ``_``)
BLOCK = re.compile(r"<!-- ([A-Za-z0-9_-]+) -->\n?(.*?)\n?<!-- /\1 -->", re.S)


def block_names(text: str) -> list[str]:
    """Names of the blocks in ``text``, in order."""
    return [m.group(1) for m in BLOCK.finditer(text)]


def read_block(text: str, name: str) -> str | None:
    """The body of block ``name`` in ``text`` (without the marker lines), or None when it is not there."""
    for m in BLOCK.finditer(text):
        if m.group(1) == name:
            return m.group(2)
    return None


def fill_block(text: str, name: str, body: str) -> str | None:
    """``text`` with ``body`` between the markers of block ``name``; None when the markers are not there."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def outside_blocks(text: str) -> str:
    """``text`` with every block's body removed (the markers stay): what is typed by hand."""
    return BLOCK.sub(lambda m: f"<!-- {m.group(1)} --><!-- /{m.group(1)} -->", text)


def replace_block(path: Path, name: str, body: str) -> bool:
    """Put ``body`` into block ``name`` of ``path``, atomically; False (file untouched) when the markers are not
    there."""
    path = Path(path)
    new = fill_block(path.read_text() if path.is_file() else "", name, body)
    if new is None:
        return False
    write_text(path, new, overwrite=True)
    return True
