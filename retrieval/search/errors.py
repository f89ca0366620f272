"""The errors of the search tool a user can fix; each message names the thing and the fix."""

from __future__ import annotations

import errno
from pathlib import Path

# OS errors that are a photo's own (gone, forbidden, a folder); any other errno is the system's.
_FILE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ELOOP}


class SearchError(Exception):
    """A problem the user can fix (missing index, wrong network, bad settings); says how."""


class NetworkMismatchError(SearchError):
    """The index was built by another network than the one given."""


class IndexInUseError(SearchError):
    """Another process is writing the index folder."""


class DamagedIndexError(SearchError):
    """A file of the index is missing, truncated or invalid; `path` names it."""

    def __init__(self, path: Path, reason: str, photos: str | None = None) -> None:
        self.path = Path(path)
        root = self.path.parent
        command = f"retrieval-search index {photos or 'PHOTOS_DIR'} --out {root}"
        super().__init__(
            f"the index file {self.path} is damaged ({reason}); repair the index by running "
            f"`{command}` again"
        )


def is_system_error(err: BaseException) -> bool:
    """Whether `err` (or what raised it) is the system's fault, not a file's: memory, the disk."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        if isinstance(current, OSError) and current.errno not in (None, *_FILE_ERRNOS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
