"""Writers that never leave a half-written file and never replace one without being told to."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from hipposeg.errors import OutputExistsError, OutputFolderError

_UMASK = os.umask(0)  # read once, at import: changing it later races with other threads' file creation
os.umask(_UMASK)


def check_writable(path: str | Path, overwrite: bool) -> None:
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(path, "exists; pass --overwrite to replace it")


@contextmanager
def atomic_path(path: str | Path, overwrite: bool = False):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode a plain open() would
    try:
        yield Path(tmp)
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(path, "exists; pass --overwrite to replace it")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, content: dict, overwrite: bool = False) -> Path:
    """``content`` as indented JSON text (sidecars, descriptions), atomically."""
    return write_text(path, json.dumps(content, indent=2) + "\n", overwrite=overwrite)


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, overwrite: bool = False) -> Path:
    """Write ``array`` with ``affine`` (RAS) as NIfTI, atomically. Label maps should be uint8."""
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path, overwrite) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


#: How hipposeg names what it writes beside a case: a file named like this is an output, never an input.
OUTPUT_SUFFIXES = ("_seg.nii.gz", "_seg.nii", "_prob.nii.gz", "_prob.nii", "_uncertainty.nii.gz", "_uncertainty.nii")


def is_output_name(path: str | Path) -> bool:
    """Whether ``path`` is named like a hipposeg output (``<case>_seg.nii.gz``, ``<case>_prob.nii.gz``)."""
    return Path(path).name.endswith(OUTPUT_SUFFIXES)


def segmentation_paths(seg_path: str | Path) -> tuple[Path, Path]:
    """The mask ``<case>_seg.nii.gz`` and its label-names sidecar ``<case>_seg.json``."""
    seg_path = Path(seg_path)
    name = seg_path.name[: -len(".nii.gz")] if seg_path.name.endswith(".nii.gz") else seg_path.stem
    return seg_path, seg_path.with_name(f"{name}.json")


def write_segmentation(seg_path: str | Path, labels: np.ndarray, affine: np.ndarray, label_names: dict | None,
                       *, overwrite: bool = False) -> tuple[Path, Path | None]:
    """Write a label map the one way every door does: the mask (uint8 NIfTI with the input's ``affine``) and,
    when ``label_names`` is given, the sidecar ``<case>_seg.json`` (``{"0": "background", "1": ...}``).
    Each file atomically; nothing existing is replaced unless ``overwrite`` (both are checked first)."""
    import json

    mask_path, names_path = segmentation_paths(seg_path)
    check_writable(mask_path, overwrite)
    if label_names is not None:
        check_writable(names_path, overwrite)
    write_nifti(mask_path, np.asarray(labels).astype(np.uint8), affine, overwrite=overwrite)
    if label_names is None:
        return mask_path, None
    text = json.dumps({str(k): v for k, v in sorted(label_names.items(), key=lambda kv: int(kv[0]))}, indent=1)
    return mask_path, write_text(names_path, text + "\n", overwrite=overwrite)


def check_output_folder(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and prove it writable (a temporary file is made and removed), or raise one
    :class:`OutputFolderError` naming the folder: a file in the way, no permission, a read-only disk."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(out_dir, "output folder is a file (choose another -o)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hipposeg-write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputFolderError(out_dir, f"output folder cannot be written ({exc.strerror or exc})") from None
    return out_dir
