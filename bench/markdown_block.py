"""The bench scripts' Markdown block writer: one implementation, in ``tools/doc_blocks.py`` (atomic; shared with
``tools/publish_docs.py``, which fills every other generated block of the docs)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from doc_blocks import replace_block  # noqa: E402,F401  (re-exported for ``from markdown_block import replace_block``)
