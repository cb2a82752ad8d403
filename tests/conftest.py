"""Shared fixtures: the real data in ../shared/data (or $HIPPOSEG_DATA), a repo-aware subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "hipposeg"


def _data_root() -> Path:
    from hipposeg.data.manifest import resolve_data_root

    return resolve_data_root()


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    assert (root / "msd_hippocampus" / "dataset.json").is_file(), (
        f"test data not found in {root}: set HIPPOSEG_DATA to the folder holding msd_hippocampus/")
    return root


@pytest.fixture(scope="session")
def msd(data_root) -> Path:
    return data_root / "msd_hippocampus"


@pytest.fixture(scope="session")
def manifest():
    from hipposeg.data import load_manifest

    return load_manifest()


def run_cli(*args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` the way a user would, from another working directory."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path):
    def _run(*args, **kw):
        kw.setdefault("cwd", tmp_path)
        return run_cli("-m", "hipposeg.cli", *args, **kw)

    return _run
