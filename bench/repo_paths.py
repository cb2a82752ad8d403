"""How the bench reports name files: relative to the repository when they lie inside it (as the READMEs do)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shown(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside it, else absolute."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(resolved)
