"""Shared fixtures: the real data in ../shared/data (or $HIPPOSEG_DATA), a repo-aware subprocess runner."""

from __future__ import annotations

import logging
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


@pytest.fixture(scope="session", autouse=True)
def runtime_cache(tmp_path_factory) -> Path:
    """Networks exported for ONNX Runtime / OpenVINO (hipposeg.runtime) go to a folder of this test session, not
    the user's ~/.cache/hipposeg: the tests' own small checkpoints would pile up there. Subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("hipposeg-cache")
    previous = os.environ.get("HIPPOSEG_CACHE")
    os.environ["HIPPOSEG_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("HIPPOSEG_CACHE", None)
    else:
        os.environ["HIPPOSEG_CACHE"] = previous


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


@pytest.fixture(autouse=True)
def _no_logging_into_a_closed_capture():
    """After each test, detach the logging handlers that write to a closed stream. MONAI's loggers (made on first
    import) and the bundle's logging.conf bind a handler to the sys.stdout of that moment: a test's ``capsys``
    capture, closed when the test ends; each later log line would then print "--- Logging error ---" into the
    stderr of another test."""
    yield
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    """``hipposeg ARGS`` run in this process (:func:`hipposeg.cli.main`) from ``tmp_path`` (or ``cwd``): a
    ``CompletedProcess`` with the exit code and what it printed. An exception the command does not turn into a
    one-line error fails the test. Tests where the process boundary matters (a kill, two runs at once, imports of
    a fresh interpreter, the console script) start a process with :func:`run_cli` instead."""
    from hipposeg.cli import main

    def _run(*args, cwd=None):
        argv = [str(a) for a in args]
        monkeypatch.chdir(cwd or tmp_path)
        capsys.readouterr()  # what came before is not this command's
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help (0), bad arguments (2)
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:  # the bundle's logging.conf (infer, train) sets up the root logger for the rest of a process
            root.handlers[:] = handlers
            root.setLevel(level)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["hipposeg", *argv], code, out, err)

    return _run
