"""Writers that never leave a half-written file and never replace one without being told to."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from hipposeg.errors import OutputExistsError

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


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, overwrite: bool = False) -> Path:
    """Write ``array`` with ``affine`` (RAS) as NIfTI, atomically. Label maps should be uint8."""
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path, overwrite) as tmp:
        nib.save(img, str(tmp))
    return Path(path)
