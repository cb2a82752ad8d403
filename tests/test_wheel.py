"""The wheel, installed the way a user installs it (issue 14).

Built with ``pip wheel . --no-deps --no-build-isolation`` from a copy of the checkout's sources (so the checkout
gets no ``build/``), installed with ``--no-deps`` into a fresh virtualenv that sees this interpreter's
site-packages through a ``.pth`` file (``--system-site-packages`` would show the base interpreter's instead), and
run from a temporary folder with no ``PYTHONPATH``: the checkout is out of reach, so whatever works here works
with only the wheel. The version test at the top needs no build.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from conftest import BUNDLE, REPO

# what the build reads (setup.py copies the bundle and the manifest into the package)
SOURCES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.md", "data_manifest.json", "hipposeg",
           "bundles/hipposeg")
CASE = "hippocampus_001"


def test_package_wheel_and_bundle_share_one_version():
    from setuptools.config.setupcfg import read_configuration

    import hipposeg

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    wheel_version = read_configuration(str(REPO / "setup.cfg"))["metadata"]["version"]
    assert hipposeg.__version__ == wheel_version == meta["version"] == meta["required_packages_version"]["hipposeg"]
    assert meta["version"] in meta["changelog"]


def _run(cmd, *, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _build_wheel(out: Path) -> Path:
    """``pip wheel .`` (offline) on a copy of the checkout's sources; the wheel's path."""
    src = out / "src"
    for rel in SOURCES:
        if (REPO / rel).is_dir():
            shutil.copytree(REPO / rel, src / rel,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "runs", "eval", "bundle_data"))
        else:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w",
                   out / "dist"], cwd=src, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list((out / "dist").glob("hipposeg-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _make_venv(path: Path) -> Path:
    """A fresh virtualenv whose ``.pth`` file adds this interpreter's site-packages (hipposeg's dependencies);
    the ``.pth`` files inside those are not run, so an editable hipposeg there stays invisible. Its python."""
    result = _run([sys.executable, "-m", "venv", "--without-pip", path], cwd=path.parent)
    assert result.returncode == 0, result.stderr
    python = path / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=path).stdout
    Path(purelib.strip(), "_hipposeg_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory, msd):
    """The wheel in a fresh virtualenv, and the checkout's ``segment`` mask of one crop (made meanwhile)."""
    tmp = tmp_path_factory.mktemp("wheel")
    crop = msd / "imagesTr" / f"{CASE}.nii.gz"
    reference = subprocess.Popen(  # the checkout's package, run while the wheel builds
        [sys.executable, "-m", "hipposeg.cli", "segment", str(crop), "-o", str(tmp / "checkout_out"), "--no-qc",
         "--quiet"], cwd=tmp, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        wheel = _build_wheel(tmp / "build")
        venv = tmp / "venv"
        python = _make_venv(venv)
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "HIPPOSEG_DATA")}
        env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
        result = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        _, err = reference.communicate(timeout=300)
    finally:
        reference.kill()  # no-op once it has finished
    work = tmp / "work"
    work.mkdir()
    assert reference.returncode == 0, err[-3000:]
    return SimpleNamespace(wheel=wheel, venv=venv.resolve(), python=python, hipposeg=venv / "bin" / "hipposeg",
                           env=env, work=work, crop=crop, reference=tmp / "checkout_out" / f"{CASE}_seg.nii.gz")


def _in_venv(installed, path) -> bool:
    return Path(path).resolve().is_relative_to(installed.venv)


def test_wheel_is_what_runs_with_its_own_bundle_and_manifest(installed):
    import hipposeg

    assert installed.wheel.name == f"hipposeg-{hipposeg.__version__}-py3-none-any.whl"
    probe = ("import json, os, sys, hipposeg, hipposeg.bundle as b, hipposeg.data.manifest as m; print(json.dumps("
             "{'file': hipposeg.__file__, 'bundle': str(b.BUNDLE_DIR), 'manifest': str(m.DEFAULT_MANIFEST), "
             "'path': [os.path.abspath(p) for p in sys.path], 'roots': [how for how, _ in m.data_root_candidates()]}))")
    result = _run([installed.python, "-c", probe], cwd=installed.work, env=installed.env)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    assert _in_venv(installed, seen["file"]) and _in_venv(installed, seen["bundle"])
    assert _in_venv(installed, seen["manifest"]) and Path(seen["manifest"]).name == "data_manifest.json"
    assert not any(Path(p).resolve() == REPO for p in seen["path"])
    assert seen["roots"] == ["user cache"]  # no "../shared/data beside the repository" outside a checkout
    package = Path(seen["file"]).parent
    assert not [p for p in package.rglob("*") if p.suffix in (".py", ".json") and str(REPO) in p.read_text()]

    result = _run([installed.hipposeg, "--version"], cwd=installed.work, env=installed.env)
    assert result.returncode == 0 and result.stdout.strip() == f"hipposeg {hipposeg.__version__}"
    result = _run([installed.hipposeg, "bundle-path"], cwd=installed.work, env=installed.env)
    assert result.returncode == 0 and result.stdout.strip() == seen["bundle"]
    bundle = Path(seen["bundle"])
    shipped = {p.relative_to(BUNDLE) for pattern in ("LICENSE", "configs/*", "docs/*", "models/*.pt", "models/*_int8.*")
               for p in BUNDLE.glob(pattern) if p.is_file()}  # every models/*.pt and int8 copy; never runs/ or eval/
    assert {p.relative_to(bundle) for p in bundle.rglob("*") if p.is_file()} == shipped
    assert Path("models/model_int8.bin") in shipped  # the int8 core travels with the wheel's bundle
    assert (bundle / "models" / "model.pt").read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes()


def test_wheel_checks_the_data_against_its_manifest(installed, data_root, manifest):
    n_files = len(manifest.files("msd_hippocampus", data_root))
    result = _run([installed.hipposeg, "data", "verify", "--dataset", "msd_hippocampus", "--data-root", data_root,
                   "--quiet"], cwd=installed.work, env=installed.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"msd_hippocampus: {n_files}/{n_files} files OK" in result.stdout


def test_wheel_segments_exactly_like_the_checkout(installed):
    result = _run([installed.hipposeg, "segment", installed.crop, "-o", "out", "--quiet"], cwd=installed.work,
                  env=installed.env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ours, reference = nib.load(installed.work / "out" / f"{CASE}_seg.nii.gz"), nib.load(installed.reference)
    assert np.array_equal(np.asanyarray(ours.dataobj), np.asanyarray(reference.dataobj))
    assert np.allclose(ours.affine, reference.affine) and np.asanyarray(ours.dataobj).any()
    row = next(csv.DictReader(open(installed.work / "out" / "volumes.csv")))
    assert _in_venv(installed, row["model"]), row["model"]


def test_a_copied_bundle_runs_with_only_the_wheel(installed):
    copy = installed.work / "my_bundle"
    bundle = Path(_run([installed.hipposeg, "bundle-path"], cwd=installed.work, env=installed.env).stdout.strip())
    shutil.copytree(bundle, copy)
    hidden = bundle.with_name("bundle_data_hidden")
    bundle.rename(hidden)  # the copy alone: nothing may resolve through the installed bundle (or the checkout)
    try:
        result = _run([installed.python, "-m", "monai.bundle", "run", "--config_file",
                       copy / "configs" / "inference.json", "--bundle_root", copy, "--dataset_dir", installed.crop,
                       "--output_dir", "bundle_out"], cwd=installed.work, env=installed.env)
    finally:
        hidden.rename(bundle)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ours = nib.load(installed.work / "bundle_out" / f"{CASE}_seg.nii.gz")
    reference = nib.load(installed.reference)
    pred, truth = np.asanyarray(ours.dataobj) > 0, np.asanyarray(reference.dataobj) > 0
    assert ours.shape == reference.shape and np.allclose(ours.affine, reference.affine)
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.99  # the same model through the bundle's door
