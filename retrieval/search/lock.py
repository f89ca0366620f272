"""One writer per index folder: an exclusive lock on INDEX_DIR/index.lock that names its holder.

``fcntl.flock`` (standard library) rather than a lock package: the kernel releases it when its
process ends in any way (even ``kill -9``), so no stale lock outlives a crash, and the holder's PID
is written in the lock file itself for the message of a refused run. Linux and macOS.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retrieval.search.errors import IndexInUseError

LOCK_FILE = "index.lock"


@contextmanager
def index_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index folder exclusively for the block; fail at once when another process does."""
    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise IndexInUseError(
                f"index {index_dir} is in use by PID {holder} (another `retrieval-search index` "
                "run); wait for it to finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released: no PID left to blame
    finally:
        os.close(fd)  # closing releases the lock
