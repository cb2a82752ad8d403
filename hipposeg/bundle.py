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
    # 0.8.0 default: the train.json core (final epoch) alone; the 3D partner no longer earned its time (issue 27)
    "default": ("model.pt", None),
    "core": ("model.pt", None),  # the 2.5D three-axis consensus alone: the default's networks, by their name
    # the core averaged 1:1 with the 3D partner (train_3d.json, final epoch): the default of 0.6.x-0.7.x, opt-in
    "ensemble": ("model.pt", "model_3d.pt"),
    "hires": ("model_hires.pt", None),  # trained on slices upsampled 1.5x; about twice the time
    "default-0.5": ("model_0.5.pt", None),  # 0.5.0's default (kept for 0.6.x)
}
#: the bundle's 3D partner checkpoint (``models/``), which ``--use_partner True`` averages with the core
PARTNER_FILE = SHIPPED_MODELS["ensemble"][1]


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


def switch(value) -> bool:
    """A bundle's on/off override as a bool. ``python -m monai.bundle run --key false`` hands the config the string
    "false" (``fire`` reads only Python's ``False`` as a boolean), which ``$not @key`` would take for true; the
    strings true/false/1/0 (any case) are read as meant and anything else is an error naming the value."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "none", ""):
        return False
    raise ValueError(f"expected a boolean (True/False), got {value!r}")


def uses_partner_by_default(partner_ckpt_path: str | Path | None, ckpt_dir: str | Path) -> bool:
    """``inference.json``'s default ``use_partner``: true only when a ``partner_ckpt_path`` other than the bundle's
    own ``models/model_3d.pt`` (:data:`PARTNER_FILE` in ``ckpt_dir``) is named, so a checkpoint runs alone unless a
    partner is asked for (the default model is the 2.5D core alone since 0.8.0). ``--use_partner True`` adds the
    bundle's partner; ``--use_partner False`` decides explicitly either way (a boolean, so ``python -m
    monai.bundle run`` keeps it: it drops overrides whose value is None)."""
    if not partner_ckpt_path:
        return False
    return Path(partner_ckpt_path).resolve() != (Path(ckpt_dir) / PARTNER_FILE).resolve()


def resolve_model(value: str | Path | None, bundle_dir: str | Path | None = None, *,
                  partner: str | Path | None = None) -> tuple[Path, dict]:
    """``--model`` of every door (``segment``, ``infer``, ``bids``, ``evaluate``, the benches): the bundle folder
    whose configs run it and the overrides of ``configs/inference.json`` that select it, so that every door runs
    the same networks for the same name. ``value``:

    * a shipped model's name (:data:`SHIPPED_MODELS`): its core, and its partner or explicitly none;
    * a bundle folder: that folder's configs and default model;
    * a checkpoint file: that core alone, or with the 3D network ``partner`` (a checkpoint file) averaged with it;
    * ``None`` or ``""``: the bundle's default model (no overrides; ``partner`` not allowed).

    Every override value is a string or a boolean, never None (``python -m monai.bundle run`` drops those).
    """
    from hipposeg.errors import InputError

    bundle_dir = Path(bundle_dir or BUNDLE_DIR)
    if partner is not None:
        if not value or str(value) in SHIPPED_MODELS or Path(value).is_dir():
            raise InputError(partner, "a 3D partner is named for a checkpoint file only (shipped models and bundle "
                                      "folders bring their own)")
        if not Path(partner).is_file():
            raise InputError(partner, "no such partner checkpoint")
    if not value:
        return bundle_dir, {}
    name = str(value)
    if name in SHIPPED_MODELS:
        core_file, partner_file = (bundle_dir / "models" / f if f else None for f in SHIPPED_MODELS[name])
        for path in (core_file, partner_file):
            if path is not None and not path.is_file():
                raise InputError(path, f"the shipped model {name!r} is missing from the bundle {bundle_dir}")
        overrides = {"ckpt_path": str(core_file), "use_partner": partner_file is not None}
        if partner_file is not None:
            overrides["partner_ckpt_path"] = str(partner_file)
        return bundle_dir, overrides
    path = Path(value)
    if path.is_dir():
        if not (path / "configs" / "inference.json").is_file():
            raise InputError(path, "not a bundle folder (no configs/inference.json)")
        return path, {}
    if not path.is_file():
        raise InputError(path, "no such model checkpoint or bundle folder (shipped models by name: "
                               f"{', '.join(SHIPPED_MODELS)})")
    overrides = {"ckpt_path": str(path.resolve()), "use_partner": partner is not None}
    if partner is not None:
        overrides["partner_ckpt_path"] = str(Path(partner).resolve())
    return bundle_dir, overrides


def parse_overrides(items: Sequence[str] | None) -> dict:
    """``KEY=VALUE`` strings (``--set`` of ``hipposeg train``/``infer`` and the benches) as bundle overrides; each
    value is read as JSON when it parses (numbers, booleans, lists), else kept as a string."""
    from hipposeg.errors import InputError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(None, f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


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
    """Run a bundle workflow exactly as ``python -m monai.bundle run --config_file ...`` would.

    The bundle's ``logging.conf`` is applied only where logging is not set up yet (the root logger has no handler,
    as in a fresh ``hipposeg`` process) or ``logging_file`` is given: ``logging.config.fileConfig`` closes every
    existing handler, which would break the logging of a program or notebook that calls this in-process."""
    import logging

    from monai.bundle import run

    bundle_dir = Path(bundle_dir or BUNDLE_DIR)
    files = config_files(bundle_dir, *config_names)
    kwargs = {"bundle_root": str(bundle_dir), **(overrides or {})}
    configured = bool(logging.getLogger().handlers)
    logging_conf = logging_file or (False if configured else str(bundle_dir / "configs" / "logging.conf"))
    run(config_file=files if len(files) > 1 else files[0], logging_file=logging_conf, **kwargs)


def read_metadata(bundle_dir: str | Path | None = None) -> dict:
    return json.loads((Path(bundle_dir or BUNDLE_DIR) / "configs" / "metadata.json").read_text())
