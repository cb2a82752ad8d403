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

# the trained models shipped in the bundle's models/ folder, by the name the CLI's --model takes (bench/README.md):
# name -> (2.5D core checkpoint, 3D partner checkpoint averaged with it or None)
SHIPPED_MODELS = {
    # 0.6.0 default: the train.json core (final epoch) + the 3D partner (train_3d.json, final epoch), averaged 1:1
    "default": ("model.pt", "model_3d.pt"),
    "core": ("model.pt", None),  # the default's 2.5D three-axis consensus alone (a little faster)
    "hires": ("model_hires.pt", None),  # trained on slices upsampled 1.5x; about twice the time
    "ensemble": ("model.pt", "model_3d.pt"),  # 0.5.0's opt-in name of what is now the default (kept for 0.6.x)
    "default-0.5": ("model_0.5.pt", None),  # 0.5.0's default (kept for 0.6.x)
}
DEFAULT_CORE, DEFAULT_PARTNER = SHIPPED_MODELS["default"]


def bundle_root() -> str:
    """The default ``bundle_root``: the bundle folder of this installation, :data:`BUNDLE_DIR` (any working
    directory; ``--bundle_root`` points a config at another copy)."""
    return str(BUNDLE_DIR)


def shipped_model(name: str, bundle_dir: str | Path | None = None) -> Path | None:
    """The core checkpoint of a shipped model named in :data:`SHIPPED_MODELS` (``None`` for any other string,
    which callers then read as a path)."""
    if name not in SHIPPED_MODELS:
        return None
    return Path(bundle_dir or BUNDLE_DIR) / "models" / SHIPPED_MODELS[name][0]


def shipped_partner(name: str | None, bundle_dir: str | Path | None = None) -> Path | None:
    """The 3D partner checkpoint of a shipped model named in :data:`SHIPPED_MODELS` (``None`` when it has none,
    or for any other string)."""
    if name not in SHIPPED_MODELS or SHIPPED_MODELS[name][1] is None:
        return None
    return Path(bundle_dir or BUNDLE_DIR) / "models" / SHIPPED_MODELS[name][1]


def default_partner(ckpt_path: str | Path, ckpt_dir: str | Path) -> str | None:
    """``inference.json``'s ``partner_ckpt_path``: ``models/model_3d.pt`` joins the bundle's default checkpoint
    ``models/model.pt`` when the folder holds one (the shipped default is that pair); any other ``ckpt_path``
    runs alone unless a partner is given (``--partner_ckpt_path``), and so does a bundle trained without one."""
    core, partner = Path(ckpt_dir) / DEFAULT_CORE, Path(ckpt_dir) / DEFAULT_PARTNER
    if Path(ckpt_path).resolve() == core.resolve() and partner.is_file():
        return str(partner)
    return None


def resolve_model(value: str | Path | None, bundle_dir: str | Path | None = None) -> tuple[Path | None, dict]:
    """``--model`` of every command: ``(checkpoint, overrides)`` for :func:`hipposeg.segmenter.load_segmenter`
    (or the bundle's ``ckpt_path`` and overrides). ``value``: a shipped model's name (its core and partner, or
    explicitly no partner), a bundle folder or a checkpoint file (run alone), or ``None`` (the bundle's default)."""
    from hipposeg.errors import InputError

    if not value:
        return None, {}
    name = str(value)
    path = shipped_model(name, bundle_dir) or Path(value)
    if not path.exists():
        raise InputError(path, "no such model checkpoint or bundle folder (shipped models by name: "
                               f"{', '.join(SHIPPED_MODELS)})")
    if name in SHIPPED_MODELS:
        partner = shipped_partner(name, bundle_dir)
        return path, {"partner_ckpt_path": str(partner) if partner else None}
    return path, {}


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
