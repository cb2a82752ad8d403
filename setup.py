"""Build hook: the wheel carries the MONAI bundle and ``data_manifest.json`` inside the package.

The repository keeps ``bundles/hipposeg/`` and ``data_manifest.json`` at its top level. ``build_py`` copies them
into the build directory only (never into the source tree): the bundle to ``hipposeg/bundle_data/`` and the
manifest to ``hipposeg/resources/data_manifest.json``, where :mod:`hipposeg.bundle` and
:mod:`hipposeg.data.manifest` look first. An editable install (``pip install -e .``) copies nothing and keeps
using the checkout's files. Everything else is declared in ``setup.cfg``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "bundles" / "hipposeg"
MANIFEST = HERE / "data_manifest.json"
# the parts of the bundle folder that ship (training and evaluation outputs such as runs/ and eval/ never do)
BUNDLE_FILES = ("LICENSE", "configs/*", "docs/*", "models/*.pt", "models/*_int8.xml", "models/*_int8.bin",
                "models/*_int8.json")


def bundle_files(bundle: Path = BUNDLE) -> list[Path]:
    """The files of ``bundle`` that ship in the wheel, relative to it (every ``models/*.pt`` and int8 copy)."""
    found = {p.relative_to(bundle) for pattern in BUNDLE_FILES for p in bundle.glob(pattern) if p.is_file()}
    return sorted(found)


class BuildPyWithBundle(build_py):
    """``build_py`` that also copies the bundle and the data manifest into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # pip install -e .: the package reads the checkout's bundle and manifest
            return
        files = bundle_files()
        missing = [name for name in ("configs/metadata.json", "configs/inference.json", "models/model.pt")
                   if Path(name) not in files]
        if missing or not MANIFEST.is_file():
            raise FileNotFoundError(f"{BUNDLE}: cannot build a wheel without {', '.join(missing) or MANIFEST}")
        package = Path(self.build_lib) / "hipposeg"
        target = package / "bundle_data"
        if target.exists():  # a file removed from the bundle must not linger from an earlier build
            shutil.rmtree(target)
        for rel in files:
            self.mkpath(str((target / rel).parent))
            self.copy_file(str(BUNDLE / rel), str(target / rel))
        self.mkpath(str(package / "resources"))
        self.copy_file(str(MANIFEST), str(package / "resources" / "data_manifest.json"))


setup(cmdclass={"build_py": BuildPyWithBundle})
