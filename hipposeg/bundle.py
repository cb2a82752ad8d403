"""Where the MONAI bundle lives and how to run its workflows from Python (the CLI's door onto the bundle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

PACKAGED_BUNDLE = Path(__file__).resolve().parent / "bundle_data"  # the wheel's copy (setup.py puts it there)
CHECKOUT_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "hipposeg"  # a repository / editable install


def find_bundle() -> Path:
    """The bundle folder of this installation: the copy inside the package when there is one (a wheel install),
    else ``bundles/hipposeg`` of the checkout the package lives in."""
    if (PACKAGED_BUNDLE / "configs" / "metadata.json").is_file():
        return PACKAGED_BUNDLE
    return CHECKOUT_BUNDLE


BUNDLE_DIR = find_bundle()

# the trained models shipped in the bundle's models/ folder, by the name the CLI's --model takes (bench/README.md)
SHIPPED_MODELS = {
    "default": "model.pt",  # 1 mm slices: fold-0 whole Dice 0.895, about 0.35 s per crop on 2 CPU cores
    "hires": "model_hires.pt",  # trained on slices upsampled 1.5x: whole Dice 0.899, about 0.74 s per crop
    "ensemble": "model.pt",  # model.pt averaged with the 3D partner model_3d.pt: whole Dice 0.898, HD95 1.17 mm
}
# the 3D partner network (hipposeg.ensemble) averaged with a shipped model's core, by model name
SHIPPED_PARTNERS = {"ensemble": "model_3d.pt"}


def bundle_root() -> str:
    """The default ``bundle_root``: the bundle folder of this installation, :data:`BUNDLE_DIR` (any working
    directory; ``--bundle_root`` points a config at another copy)."""
    return str(BUNDLE_DIR)


def shipped_model(name: str, bundle_dir: str | Path | None = None) -> Path | None:
    """The checkpoint of a shipped model named in :data:`SHIPPED_MODELS` (``None`` for any other string, which
    callers then read as a path)."""
    if name not in SHIPPED_MODELS:
        return None
    return Path(bundle_dir or BUNDLE_DIR) / "models" / SHIPPED_MODELS[name]


def shipped_partner(name: str | None, bundle_dir: str | Path | None = None) -> Path | None:
    """The 3D partner checkpoint of a shipped model named in :data:`SHIPPED_PARTNERS` (``None`` otherwise)."""
    if name not in SHIPPED_PARTNERS:
        return None
    return Path(bundle_dir or BUNDLE_DIR) / "models" / SHIPPED_PARTNERS[name]


def config_files(bundle_dir: str | Path, *names: str) -> list[str]:
    return [str(Path(bundle_dir) / "configs" / name) for name in names]


def parse_bundle(config_names: Sequence[str], bundle_dir: str | Path | None = None, overrides: dict | None = None):
    """A ``monai.bundle.ConfigParser`` over the bundle's configs with ``overrides`` applied."""
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir or BUNDLE_DIR)
    parser = ConfigParser()
    parser.read_config(config_files(bundle_dir, *config_names))
    parser["bundle_root"] = str(bundle_dir)
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def run_workflow(config_names: Sequence[str], bundle_dir: str | Path | None = None, overrides: dict | None = None,
                 logging_file: str | None = None) -> None:
    """Run a bundle workflow exactly as ``python -m monai.bundle run --config_file ...`` would."""
    from monai.bundle import run

    bundle_dir = Path(bundle_dir or BUNDLE_DIR)
    files = config_files(bundle_dir, *config_names)
    kwargs = {"bundle_root": str(bundle_dir), **(overrides or {})}
    logging_conf = logging_file or str(bundle_dir / "configs" / "logging.conf")
    run(config_file=files if len(files) > 1 else files[0], logging_file=logging_conf, **kwargs)


def read_metadata(bundle_dir: str | Path | None = None) -> dict:
    return json.loads((Path(bundle_dir or BUNDLE_DIR) / "configs" / "metadata.json").read_text())
