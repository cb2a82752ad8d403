"""The datasets the project knows (``data_manifest.json``): where they live, checksums, folds.

Paths in the manifest are relative to a dataset folder, which is ``<data root>/<dataset dir>``.
The data root is resolved in this order: ``--data-root``, ``$HIPPOSEG_DATA``, ``../shared/data`` beside the
repository (a checkout or editable install only), the user cache (``~/.cache/hipposeg/data``, or
``$XDG_CACHE_HOME/hipposeg/data``).

The manifest itself is the copy inside the package when there is one (a wheel install, see ``setup.py``), else
``data_manifest.json`` of the checkout. A dataset folder given explicitly (``dataset_dir``) whose MSD
``dataset.json`` lists cases the manifest does not know gets its datalist from that ``dataset.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from hipposeg.errors import DataNotFoundError, InputError

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when the package lives in one
PACKAGED_MANIFEST = Path(__file__).resolve().parents[1] / "resources" / "data_manifest.json"  # the wheel's copy
IN_CHECKOUT = (REPO_ROOT / "data_manifest.json").is_file()
DEFAULT_MANIFEST = PACKAGED_MANIFEST if PACKAGED_MANIFEST.is_file() else REPO_ROOT / "data_manifest.json"
SPLITS = ("train", "val", "all", "test")
DATA_ROOT_ENV = "HIPPOSEG_DATA"
# the fold recipe of a dataset folder the manifest does not list, unless its manifest entry gives n_folds/fold_seed
FOLDER_N_FOLDS, FOLDER_FOLD_SEED = 5, 0


def user_cache_data_dir() -> Path:
    from hipposeg.cache import user_cache_home

    return user_cache_home() / "data"


def data_root_candidates(data_root: str | Path | None = None) -> list[tuple[str, Path]]:
    """Where a data root is looked for, first match wins: (how it was chosen, path)."""
    if data_root:
        return [("--data-root", Path(data_root))]
    if os.environ.get(DATA_ROOT_ENV):
        return [(f"${DATA_ROOT_ENV}", Path(os.environ[DATA_ROOT_ENV]))]
    beside = [("beside the repository", REPO_ROOT.parent / "shared" / "data")] if IN_CHECKOUT else []
    return beside + [("user cache", user_cache_data_dir())]


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """The first existing candidate of :func:`data_root_candidates`, else the first one (for the error)."""
    candidates = data_root_candidates(data_root)
    for _, path in candidates:
        if path.is_dir():
            return path
    return candidates[0][1]


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """The one sha256 of hipposeg: of a file's bytes, or for a folder (a DICOM series) of the relative name and the
    bytes of every file in it, in sorted order (dataset checksums, model files, the inputs a batch has segmented)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
    return digest.hexdigest()


def assign_folds(case_ids: list[str], n_folds: int = 5, seed: int = 0) -> dict[str, int]:
    """A fixed, seeded assignment of cases to ``n_folds`` folds (sizes differ by at most one)."""
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[j]: int(rank % n_folds) for rank, j in enumerate(order)}


def _relative(path: str) -> str:
    """A path of ``dataset.json`` (``./imagesTr/x.nii.gz``) as the manifest writes it (``imagesTr/x.nii.gz``)."""
    return str(PurePosixPath(path))


def _case_id(image: str) -> str:
    name = PurePosixPath(image).name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name.rsplit(".", 1)[0]


def msd_folder_cases(folder: str | Path, *, n_folds: int = FOLDER_N_FOLDS,
                     seed: int = FOLDER_FOLD_SEED) -> list[dict] | None:
    """Case records (as in the manifest) of an MSD-layout folder, read from its ``dataset.json``: each
    ``training`` entry with a fold from :func:`assign_folds`, each ``test`` entry unlabelled; ``None`` when the
    folder has no ``dataset.json``."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        training = [(_relative(e["image"]), _relative(e["label"])) for e in raw.get("training", [])]
        test = [_relative(e["image"] if isinstance(e, dict) else e) for e in raw.get("test", [])]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(path, f"not an MSD dataset description ({type(exc).__name__}: {exc})") from None
    folds = assign_folds([_case_id(image) for image, _ in training], n_folds, seed)
    cases = [{"id": _case_id(image), "split": "train", "fold": folds[_case_id(image)], "image": image,
              "label": label} for image, label in training]
    return cases + [{"id": _case_id(image), "split": "test", "image": image} for image in test]


@dataclass
class Manifest:
    """``data_manifest.json`` loaded: dataset entries keyed by name."""

    datasets: dict
    path: Path | None = None

    def entry(self, name: str) -> dict:
        if name not in self.datasets:
            raise InputError(self.path, f"unknown dataset {name!r}; known: {', '.join(sorted(self.datasets))}")
        return self.datasets[name]

    def dataset_dir(self, name: str, data_root: str | Path | None = None) -> Path:
        """The folder of dataset ``name``; a missing one is an error that says where we looked."""
        entry = self.entry(name)
        looked = []
        for how, root in data_root_candidates(data_root):
            folder = root / entry["dir"]
            looked.append(f"{folder} ({how})")
            if folder.is_dir():
                return folder
        how_to_get = entry.get("how_to_get", "see data_manifest.json")
        raise DataNotFoundError(None, f"dataset {name!r} not found; looked in {', '.join(looked)}. {how_to_get}")

    def cases(self, name: str, data_root: str | Path | None = None, dataset_dir: str | Path | None = None) -> list[dict]:
        """Case records of a dataset. Imported datasets keep theirs in a ``cases_file`` inside the dataset."""
        entry = self.entry(name)
        if "cases" in entry:
            return entry["cases"]
        if "cases_file" not in entry:
            return []
        cases_file = Path(dataset_dir or self.dataset_dir(name, data_root)) / entry["cases_file"]
        if not cases_file.is_file():
            raise DataNotFoundError(cases_file, f"dataset {name!r} has no case list; {entry.get('how_to_get', '')}")
        return json.loads(cases_file.read_text())["cases"]

    def folder_cases(self, name: str, folder: str | Path, data_root: str | Path | None = None) -> list[dict]:
        """The cases of dataset ``name`` found in ``folder``: the manifest's (with their folds) when they include
        every case of the folder's MSD ``dataset.json`` (or the folder has none), else the ``dataset.json`` cases
        with a fixed, seeded split (the entry's ``n_folds``/``fold_seed``, default 5 folds, seed 0)."""
        entry = self.entry(name)
        own = msd_folder_cases(folder, n_folds=entry.get("n_folds", FOLDER_N_FOLDS),
                               seed=entry.get("fold_seed", FOLDER_FOLD_SEED))
        try:
            listed = self.cases(name, data_root, folder)
        except DataNotFoundError:  # an imported dataset's case list is not in this folder
            if own is None:
                raise
            return own
        known = {_relative(case["image"]) for case in listed}
        if own is None or all(case["image"] in known for case in own):
            return listed
        return own

    def num_classes(self, name: str) -> int:
        return len(self.entry(name)["labels"])

    def label_names(self, name: str) -> dict[int, str]:
        return {int(k): v for k, v in self.entry(name)["labels"].items()}

    def datalist(
        self, name: str, split: str = "train", fold: int | None = 0, data_root: str | Path | None = None,
        dataset_dir: str | Path | None = None, max_cases: int | None = None, *, exclude_folds: Sequence[int] = (),
    ) -> list[dict]:
        """MONAI-style datalist ``[{"image": path, "label": path, "case": id}, ...]``.

        ``split``: ``train`` (every labelled case not in ``fold``), ``val`` (the cases of ``fold``),
        ``all`` (every labelled case), ``test`` (cases of the test split, label when there is one).
        With ``fold=None`` the training split is every labelled case and ``val`` is empty (train on all, no
        validation). Any other ``split`` is an error (it once fell through to the training cases).
        Datasets with a fixed train/test split (``split`` key per case) use it for ``train``/``test``.
        ``dataset_dir`` overrides where the dataset lives (an MSD folder with cases the manifest does not list
        brings its own, see :meth:`folder_cases`); ``max_cases`` keeps the first cases (smoke tests);
        ``exclude_folds`` leaves these folds out of ``train`` as well (a smaller training set scored on the same
        validation fold: the learning curve of ``bench/accuracy.py``).
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        folder = Path(dataset_dir) if dataset_dir else self.dataset_dir(name, data_root)
        out = []
        for case in self.folder_cases(name, folder, data_root):
            labelled = bool(case.get("label"))
            case_split = case.get("split", "train" if labelled else "test")
            if split == "test":
                keep = case_split == "test"
            elif case_split != "train" or not labelled:
                keep = False
            elif split == "all" or fold is None or "fold" not in case:
                keep = split in ("all", "train")
            else:
                keep = (case["fold"] == fold) == (split == "val")
            if keep and split == "train" and case.get("fold") in exclude_folds:
                keep = False
            if keep:
                item = {"image": str(folder / case["image"]), "case": case["id"]}
                if labelled:
                    item["label"] = str(folder / case["label"])
                out.append(item)
        return out[:max_cases] if max_cases else out

    def files(self, name: str, data_root: str | Path | None = None) -> list[tuple[Path, str]]:
        """(absolute path, expected sha256) of every file listed for a dataset."""
        folder = self.dataset_dir(name, data_root)
        pairs = []
        for case in self.cases(name, data_root):
            for key in ("image", "label"):
                if case.get(key):
                    pairs.append((folder / case[key], case[f"{key}_sha256"]))
        for extra in self.entry(name).get("files", []):
            pairs.append((folder / extra["path"], extra["sha256"]))
        return pairs

    def verify(self, name: str, data_root: str | Path | None = None, progress: bool = False) -> list[str]:
        """Check that every listed file exists and matches its sha256; return the problems found."""
        pairs = self.files(name, data_root)
        if progress:
            from tqdm import tqdm

            pairs = tqdm(pairs, desc=f"verify {name}", unit="file", leave=False)
        problems = []
        for path, expected in pairs:
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif sha256_of(path) != expected:
                problems.append(f"{path}: sha256 mismatch (file changed or corrupt)")
        return problems


def load_manifest(path: str | Path | None = None) -> Manifest:
    path = Path(path) if path else DEFAULT_MANIFEST
    if not path.is_file():
        raise InputError(path, "manifest not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    return Manifest(datasets=raw["datasets"], path=path)
