"""Atomic writes: all or nothing under the final name, with the usual file permissions; a full disk
is named and leaves the old file."""

import errno
import io
import os
import re
import stat
from pathlib import Path

import pytest
import torch

from retrieval import atomic
from retrieval.atomic import DiskFullError, atomic_write
from retrieval.checkpoint import save_checkpoint
from retrieval.lightning.callbacks import AtomicCheckpointIO
from retrieval.models.net import build_net


def test_writes_the_file_with_umask_permissions(tmp_path):
    path = atomic_write(tmp_path / "sub" / "a.bin", lambda f: f.write(b"data"))
    assert path.read_bytes() == b"data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~atomic._UMASK
    assert [p.name for p in path.parent.iterdir()] == ["a.bin"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write(tmp_path / "a.bin", lambda f: f.write(b"old"))

    def fail(handle):
        handle.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


class FullDisk(io.RawIOBase):
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, handle: io.BufferedWriter, room: int) -> None:
        self.handle, self.room = handle, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)


def only_the_file(path: Path) -> None:
    """`path` is alone in its folder: no orphan temporary file."""
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_full_disk_is_named_and_keeps_the_old_file(tmp_path):
    path = atomic_write(tmp_path / "a.bin", lambda f: f.write(b"old"))

    def fill(handle):
        handle.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=f"^disk full at {re.escape(str(path))}") as err:
        atomic_write(path, fill)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert path.read_bytes() == b"old"
    only_the_file(path)


def test_a_full_disk_at_fsync_is_named(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "a.bin", lambda f: f.write(b"old"))
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EDQUOT, "")))
    with pytest.raises(DiskFullError, match="disk full at"):
        atomic_write(path, lambda f: f.write(b"new"))
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    only_the_file(path)


def test_a_full_disk_under_torch_save_is_named(tmp_path, monkeypatch):
    # torch reports the failed write as "unexpected pos"; the full disk is found beneath it.
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, FullDisk(f, room=1000)))
    with pytest.raises(DiskFullError, match=f"disk full at {re.escape(str(path))}"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2, "w": torch.zeros(10_000)}, path)
    with pytest.raises(DiskFullError, match="disk full at .*model.pt"):
        save_checkpoint(tmp_path / "model.pt", build_net("resnet18", "gem"))
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    only_the_file(path)
