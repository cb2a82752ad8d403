"""Rebuild the case lists and checksums of ``data_manifest.json`` from the data on disk.

    python -m hipposeg.data.manifest_builder [--data-root DIR]

Keeps each dataset's descriptive fields (source, licence, URLs, labels) and rewrites ``cases`` / ``files``.
The fold assignment is a pure function of the case ids and ``fold_seed``, so rebuilding never moves a case.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hipposeg.data.manifest import DEFAULT_MANIFEST, msd_folder_cases, resolve_data_root, sha256_of
from hipposeg.data.writers import write_text
from hipposeg.errors import DataNotFoundError


def msd_cases(folder: Path, n_folds: int, seed: int) -> list[dict]:
    """Cases of an MSD-layout dataset as the manifest lists them: what the one ``dataset.json`` reader
    (:func:`hipposeg.data.manifest.msd_folder_cases`: case ids, paths, folds) gives, training cases sorted by id,
    with the sha256 of every file."""
    found = msd_folder_cases(folder, n_folds=n_folds, seed=seed)
    if found is None:
        raise DataNotFoundError(folder / "dataset.json", "no MSD dataset description in this folder")
    cases = []
    for case in sorted((c for c in found if c["split"] == "train"), key=lambda c: c["id"]):
        cases.append({
            "id": case["id"], "split": "train", "fold": case["fold"],
            "image": case["image"], "image_sha256": sha256_of(folder / case["image"]),
            "label": case["label"], "label_sha256": sha256_of(folder / case["label"]),
        })
    for case in (c for c in found if c["split"] == "test"):
        cases.append({"id": case["id"], "split": "test", "image": case["image"],
                      "image_sha256": sha256_of(folder / case["image"])})
    return cases


def subject_cases(folder: Path, layout: dict) -> list[dict]:
    """One test case per subject folder holding ``layout['image']`` (and ``layout['label']``)."""
    cases = []
    for subject in sorted(p for p in folder.iterdir() if (p / layout["image"]).is_file()):
        case = {"id": subject.name, "split": "test", "image": f"{subject.name}/{layout['image']}",
                "image_sha256": sha256_of(subject / layout["image"])}
        if (subject / layout["label"]).is_file():
            case.update(label=f"{subject.name}/{layout['label']}", label_sha256=sha256_of(subject / layout["label"]))
        cases.append(case)
    return cases


def file_list(folder: Path) -> list[dict]:
    return [{"path": str(p.relative_to(folder)), "sha256": sha256_of(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    args = parser.parse_args(argv)
    root = resolve_data_root(args.data_root)
    manifest = json.loads(Path(args.manifest).read_text())
    for name, entry in manifest["datasets"].items():
        folder = root / entry["dir"]
        if not folder.is_dir() or "cases_file" in entry:
            continue
        if entry.get("layout", {}).get("kind") == "msd":
            entry["cases"] = msd_cases(folder, entry["n_folds"], entry["fold_seed"])
            entry["files"] = [{"path": "dataset.json", "sha256": sha256_of(folder / "dataset.json")}]
        elif entry.get("layout", {}).get("kind") == "subject_folders":
            entry["cases"] = subject_cases(folder, entry["layout"])
            entry.pop("files", None)
        else:
            entry["files"] = file_list(folder)
        print(f"{name}: {len(entry.get('cases', []))} cases, {len(entry.get('files', []))} extra files")
    write_text(args.manifest, json.dumps(manifest, indent=1) + "\n", overwrite=True)


if __name__ == "__main__":
    main()
