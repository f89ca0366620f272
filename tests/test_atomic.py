"""Atomic writes: all or nothing under the final name, with the usual file permissions."""

import stat

import pytest

from retrieval import atomic
from retrieval.atomic import atomic_write


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
