"""Atomic file writes: a crash or kill never leaves a half-written file under the final name."""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# No space left: on the device (ENOSPC) or in the user's quota (EDQUOT).
_FULL = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(OSError):
    """The disk filled up while a file was written; the previous file is left as it was."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno 28]" prefix


def _read_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: os.umask is process-wide, not thread-safe


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write through `write` into a temporary file beside `path`, then rename it into place.

    A full disk raises DiskFullError ("disk full at PATH"); any failure removes the temporary file
    and leaves a previous file at `path` untouched.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points to it
        # mkstemp creates 0600 files; give the usual permissions of a new file (umask applied).
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(err):
            raise _disk_full(path) from err
        raise
    return path


def _is_disk_full(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from (torch wraps it), is a full disk."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in _FULL:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _disk_full(path: Path) -> DiskFullError:
    """The error of a full disk at `path`, naming it and the fix."""
    message = (
        f"disk full at {path}: free some space there and run again (the previous file, if any, "
        "is unchanged)"
    )
    return DiskFullError(errno.ENOSPC, message, str(path))
