"""The output folder is the state of a batch: what is finished, what is not, who is working on what.

Per case ``<case>`` the folder holds ``<case>_seg.nii.gz`` (mask), ``<case>_seg.json`` (label names),
``<case>_qc.png`` (QC picture), with ``--save-uncertainty`` ``<case>_uncertainty.nii.gz`` and, written last,
``<case>_volumes.json`` (the *row file*: the case's volume row, its input path and the sha256 of the input's
content). The row file marks the case as finished; every file is written atomically (temporary name + rename), so
a run killed at any moment leaves each file whole or absent.

* :func:`case_status` reads that state: ``new``, ``finished``, ``changed`` (finished from an input whose content
  has changed since), ``unfinished`` (outputs without a row file: a run was killed mid-case).
* :class:`FileLock` keeps two runs off one case (``<case>.lock``) and serialises the table rebuild
  (``volumes.lock``).
* :func:`rebuild_volume_tables` writes ``volumes.csv``/``volumes.json`` from the row files of every finished case
  in the folder, so a resumed, extended or concurrent run ends with one table whose rows are exactly the masks.

Why ``flock`` and not a pid file made with ``O_CREAT | O_EXCL``: the kernel releases an ``flock`` when its holder
dies, SIGKILL included, so a lock left by a killed run is free at once, with no guess about whether a pid is still
alive, no error when the pid has been reused, and no race between two runs taking over the same stale file. The
lock file still holds ``pid <n> on <host>`` so the "being segmented by another run" line can say who. Linux maps
``flock`` onto NFS locks, so runs on several machines sharing a folder exclude each other too. (POSIX only.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from hipposeg.data.writers import write_text
from hipposeg.errors import OutputFolderError

ROW_SUFFIX = "_volumes.json"
TABLE_LOCK = "volumes.lock"


@dataclass(frozen=True)
class CaseFiles:
    """Where the outputs of one case live in the output folder."""

    seg: Path  # <case>_seg.nii.gz, the mask
    labels: Path  # <case>_seg.json, label names
    qc: Path  # <case>_qc.png
    row: Path  # <case>_volumes.json, written last: the case is finished
    lock: Path  # <case>.lock, held while a run works on the case
    uncertainty: Path  # <case>_uncertainty.nii.gz, the per-voxel uncertainty map (only with save_uncertainty)
    uncertainty_json: Path | None = None  # the map's JSON sidecar (BIDS layout; None: none written)

    @classmethod
    def of(cls, out_dir: str | Path, case: str) -> "CaseFiles":
        out = Path(out_dir)
        return cls(seg=out / f"{case}_seg.nii.gz", labels=out / f"{case}_seg.json", qc=out / f"{case}_qc.png",
                   row=out / f"{case}{ROW_SUFFIX}", lock=out / f"{case}.lock",
                   uncertainty=out / f"{case}_uncertainty.nii.gz")

    def outputs(self) -> tuple[Path, ...]:
        """Everything a case writes, the row file last."""
        return self.seg, self.labels, self.qc, self.row


def row_record(case: str, input_path: str | Path, sha256: str, row: dict) -> dict:
    """The content of a row file: the case, its input, the input's sha256 and the volume row of the table."""
    return {"case": case, "input": str(input_path), "input_sha256": sha256, "row": row}


def write_row_file(files: CaseFiles, record: dict) -> Path:
    return write_text(files.row, json.dumps(record, indent=1) + "\n", overwrite=True)


def read_row_file(path: str | Path) -> dict | None:
    """A row file's record, or None when it is missing or not a record (then the case is not finished)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("row"), dict) else None


def case_status(files: CaseFiles, sha256: str) -> str:
    """``new`` (nothing written), ``finished`` (row file and mask, same input content), ``changed`` (finished
    from an input whose sha256 differs) or ``unfinished`` (outputs without a row file, or a row file without
    its mask)."""
    record = read_row_file(files.row)
    if record is None:
        return "unfinished" if any(p.exists() for p in (files.seg, files.labels, files.qc)) else "new"
    if record.get("input_sha256") != sha256:
        return "changed"
    return "finished" if files.seg.exists() else "unfinished"


def finished_rows(out_dir: str | Path) -> list[dict]:
    """The volume rows of every finished case in ``out_dir`` (a row file whose mask exists), by case name."""
    rows = []
    for path in sorted(Path(out_dir).glob(f"*{ROW_SUFFIX}")):
        record = read_row_file(path)
        case = path.name[: -len(ROW_SUFFIX)]
        if record is not None and CaseFiles.of(out_dir, case).seg.exists():
            rows.append(record["row"])
    return sorted(rows, key=lambda row: str(row.get("case", "")))


def rebuild_volume_tables(out_dir: str | Path) -> tuple[Path, ...]:
    """Rewrite ``volumes.csv`` and ``volumes.json`` from all finished cases in ``out_dir`` (atomic replace; the
    tables are derived, so no ``--overwrite`` is needed). Runs ending together take turns (``volumes.lock``):
    whichever rebuilds last reads every row file written before it, so the final table misses none. Returns
    the two paths, or () when there is no finished case and no table to update."""
    from hipposeg.volumes import write_volume_tables

    out_dir = Path(out_dir)
    with FileLock(out_dir / TABLE_LOCK, wait=True):
        rows = finished_rows(out_dir)
        if not rows and not (out_dir / "volumes.csv").exists():
            return ()
        return tuple(write_volume_tables(rows, out_dir, overwrite=True))


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing, removed on release), holding ``pid <n> on <host>``.

    ``with FileLock(path, wait=True):`` blocks until the lock is free. ``FileLock(path).acquire()`` does not
    block: it returns False when another live process holds the lock (:meth:`holder` says who).
    """

    def __init__(self, path: str | Path, *, wait: bool = False):
        self.path, self.wait, self._fd = Path(path), wait, None

    def acquire(self) -> bool:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise OutputFolderError(self.path.parent, f"cannot lock {self.path.name} ({exc.strerror})") from None
            if self._is_current(fd):
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
                self._fd = fd
                return True
            os.close(fd)  # its holder removed the file between our open and our lock: try the new one

    def _is_current(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (on_disk.st_ino, on_disk.st_dev) == (held.st_ino, held.st_dev)

    def holder(self) -> str:
        """Who holds the lock, as written in the lock file (empty when unknown)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # removed while still held: a waiting run then retries the new file
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        if not self.acquire():
            raise BlockingIOError(f"{self.path}: held by {self.holder() or 'another process'}")
        return self

    def __exit__(self, *exc) -> None:
        self.release()
