"""The cache folder (hipposeg.cache): a checkpoint's sha256 is hashed once per version of the file, kept in the
process and in the cache folder, and a cache folder that cannot be written only costs the hashing."""

from __future__ import annotations

import json
import os

import pytest

import hipposeg.data.manifest as manifest
from hipposeg import cache
from hipposeg.cache import SHA256_FILE, cache_dir, cached_sha256
from hipposeg.data.manifest import sha256_of


@pytest.fixture
def hashes(monkeypatch):
    """The paths ``sha256_of`` hashes from here on; the in-process cache starts empty (a fresh process)."""
    seen = []

    def counting(path, *args, **kwargs):
        seen.append(str(path))
        return sha256_of(path, *args, **kwargs)

    monkeypatch.setattr(manifest, "sha256_of", counting)
    cache._sha256_of_version.cache_clear()
    yield seen
    cache._sha256_of_version.cache_clear()


def test_a_checkpoint_is_hashed_once_per_version_across_start_ups(tmp_path, monkeypatch, hashes):
    monkeypatch.setenv("HIPPOSEG_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights" * 1000)
    digest = sha256_of(checkpoint)
    assert cached_sha256(checkpoint) == cached_sha256(tmp_path / "." / "model.pt") == digest
    assert len(hashes) == 1  # the second call, by another spelling of the path, is this process's memory
    stored = json.loads((cache_dir() / SHA256_FILE).read_text())
    assert stored[str(checkpoint.resolve())]["sha256"] == digest
    cache._sha256_of_version.cache_clear()  # a new start-up: read from the cache folder, not hashed
    assert cached_sha256(checkpoint) == digest and len(hashes) == 1
    checkpoint.write_bytes(b"retrained" * 1000)  # another version under the same name: hashed again
    assert cached_sha256(checkpoint) == sha256_of(checkpoint) != digest and len(hashes) == 2
    stat = checkpoint.stat()  # same size, only the modification time differs: hashed again
    checkpoint.write_bytes(b"retrainee" * 1000)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    cache._sha256_of_version.cache_clear()
    assert cached_sha256(checkpoint) == sha256_of(checkpoint) and len(hashes) == 3


def test_an_unwritable_or_damaged_cache_folder_only_costs_the_hashing(tmp_path, monkeypatch, hashes):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("HIPPOSEG_CACHE", str(blocker / "cache"))  # cannot be made, read or written, even as root
    assert cached_sha256(checkpoint) == sha256_of(checkpoint)
    cache._sha256_of_version.cache_clear()
    assert cached_sha256(checkpoint) == sha256_of(checkpoint) and len(hashes) == 2  # every start-up hashes
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / SHA256_FILE).write_text("{half a fi")
    monkeypatch.setenv("HIPPOSEG_CACHE", str(damaged))
    cache._sha256_of_version.cache_clear()
    assert cached_sha256(checkpoint) == sha256_of(checkpoint) and len(hashes) == 3
    assert json.loads((damaged / SHA256_FILE).read_text())[str(checkpoint.resolve())]["sha256"] == sha256_of(checkpoint)


def test_onnx_exports_are_named_by_the_cached_sha256(tmp_path, monkeypatch, hashes):
    from hipposeg.runtime import onnx_path

    monkeypatch.setenv("HIPPOSEG_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    first = onnx_path(checkpoint, "core")
    assert first.parent == tmp_path / "cache" / "onnx" and sha256_of(checkpoint)[:20] in first.name
    assert onnx_path(checkpoint, "core-inner") != first and len(hashes) == 1
