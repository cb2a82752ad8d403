"""Rebuild the case lists and checksums of ``data_manifest.json`` from the data on disk.

    python -m hipposeg.data.manifest_builder [--data-root DIR]

Keeps each dataset's descriptive fields (source, licence, URLs, labels) and rewrites ``cases`` / ``files``.
The fold assignment is a pure function of the case ids and ``fold_seed``, so rebuilding never moves a case.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hipposeg.data.manifest import DEFAULT_MANIFEST, assign_folds, resolve_data_root, sha256_of


def msd_cases(folder: Path, n_folds: int, seed: int) -> list[dict]:
    """Cases of an MSD-layout dataset (``dataset.json`` with ``training`` and ``test`` lists)."""
    spec = json.loads((folder / "dataset.json").read_text())
    training = [(Path(t["image"]).name.replace(".nii.gz", ""), t) for t in spec["training"]]
    folds = assign_folds([cid for cid, _ in training], n_folds, seed)
    cases = []
    for cid, item in sorted(training):
        image, label = item["image"].lstrip("./"), item["label"].lstrip("./")
        cases.append({
            "id": cid, "split": "train", "fold": folds[cid],
            "image": image, "image_sha256": sha256_of(folder / image),
            "label": label, "label_sha256": sha256_of(folder / label),
        })
    for item in spec.get("test", []):
        image = (item if isinstance(item, str) else item["image"]).lstrip("./")
        cases.append({"id": Path(image).name.replace(".nii.gz", ""), "split": "test",
                      "image": image, "image_sha256": sha256_of(folder / image)})
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
    Path(args.manifest).write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
