"""The hipposeg cache folder and the checkpoints' sha256 kept in it, so that a start-up does not hash them again.

:func:`cache_dir` is ``$HIPPOSEG_CACHE``, else ``$XDG_CACHE_HOME/hipposeg``, else ``~/.cache/hipposeg``: it holds the
ONNX exports of the networks (:mod:`hipposeg.runtime`) and ``sha256.json``. :func:`cached_sha256` is
:func:`hipposeg.data.manifest.sha256_of` of a file hashed at every start-up (a checkpoint, tens of MB: the ONNX
exports are named by it, the BIDS ``dataset_description.json`` records it), remembered per version of the file (its
resolved path, size and modification time in ns): in this process, and in ``sha256.json`` for later ones. A cache
folder that cannot be read or written (a read-only home in a container) only costs the hashing.

Plain Python: importing this module pulls no torch.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

__all__ = ["SHA256_FILE", "cache_dir", "cached_sha256", "user_cache_home"]

#: The stored sha256 of file versions, in :func:`cache_dir`: ``{resolved path: {"size", "mtime_ns", "sha256"}}``.
SHA256_FILE = "sha256.json"


def user_cache_home() -> Path:
    """hipposeg's folder in the user's cache: ``$XDG_CACHE_HOME/hipposeg``, else ``~/.cache/hipposeg`` (the default
    :func:`cache_dir`, and where :mod:`hipposeg.data.manifest` keeps fetched data under ``data/``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hipposeg"


def cache_dir() -> Path:
    """Where hipposeg keeps what it makes once (exported networks, checkpoints' sha256): ``$HIPPOSEG_CACHE``, else
    :func:`user_cache_home`."""
    if os.environ.get("HIPPOSEG_CACHE"):
        return Path(os.environ["HIPPOSEG_CACHE"])
    return user_cache_home()


def cached_sha256(path: str | Path) -> str:
    """:func:`~hipposeg.data.manifest.sha256_of` ``path``, hashed once per version of the file (path, size,
    modification time) and then read from this process's memory or :data:`SHA256_FILE`. A folder is hashed every
    time (its modification time does not follow the files inside)."""
    path = Path(path).resolve()
    if not path.is_file():
        from hipposeg.data.manifest import sha256_of

        return sha256_of(path)
    stat = path.stat()
    return _sha256_of_version(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of_version(path: str, size: int, mtime_ns: int) -> str:
    from hipposeg.data.manifest import sha256_of

    stored = _read_stored()
    entry = stored.get(path)
    if isinstance(entry, dict) and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns \
            and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = sha256_of(path)
    stored = {p: e for p, e in stored.items() if os.path.exists(p)}  # files gone since: forgotten
    stored[path] = {"size": size, "mtime_ns": mtime_ns, "sha256": digest}
    _write_stored(stored)
    return digest


def _read_stored() -> dict:
    try:
        stored = json.loads((cache_dir() / SHA256_FILE).read_text())
    except (OSError, ValueError):  # none yet, unreadable, or half-written by an older version: hash again
        return {}
    return stored if isinstance(stored, dict) else {}


def _write_stored(stored: dict) -> None:
    from hipposeg.data.writers import write_text

    try:
        write_text(cache_dir() / SHA256_FILE, json.dumps(stored, indent=1, sort_keys=True) + "\n", overwrite=True)
    except OSError:
        pass  # a read-only cache folder: the next start-up hashes again
