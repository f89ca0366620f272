"""Archive extraction that never leaves a half-extracted folder and refuses escaping members."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from retrieval.data.download.transfer import DownloadError

logger = logging.getLogger(__name__)


def _safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar/tgz/zip archive into ``target`` refusing paths that escape it."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            root = target.resolve()
            for member in zipped.namelist():
                if not (target / member).resolve().is_relative_to(root):
                    raise DownloadError(f"{archive}: member {member!r} escapes the target folder")
            zipped.extractall(target)
        return
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
            return
        root = target.resolve()  # Python without extraction filters: check names ourselves
        for member in tar.getmembers():
            unsafe = member.issym() or member.islnk() or member.isdev()
            if unsafe or not (target / member.name).resolve().is_relative_to(root):
                raise DownloadError(f"{archive}: member {member.name!r} is unsafe to extract")
        tar.extractall(target)


def _move_into(source: Path, dest: Path) -> None:
    """Move the content of folder ``source`` into folder ``dest``, merging subfolders."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        target = dest / entry.name
        if entry.is_dir() and target.is_dir():
            _move_into(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def _flatten(folder: Path, into: Path) -> None:
    into.mkdir()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            if (into / path.name).exists():
                logger.warning("flattening %s: duplicate file name %s kept once", folder, path.name)
            os.replace(path, into / path.name)


def extract_archive(
    archive: str | Path, dest: str | Path, *, flatten: bool = False, subdir: str | None = None
) -> Path:
    """Extract ``archive`` into folder ``dest`` via a temporary sibling folder.

    Nothing appears in ``dest`` unless the whole archive extracted; a new ``dest`` is created by
    one rename, an existing one receives the extracted entries (merged).
    """
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        raw = tmp / "raw"
        try:
            _safe_extract(archive, raw)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
            raise DownloadError(
                f"could not extract {archive} into {dest}: {err}. The archive is corrupt or "
                "incomplete; it was deleted, run the download again"
            ) from err
        content = raw / subdir if subdir else raw
        if not content.is_dir():
            raise DownloadError(f"{archive} has no folder {subdir!r}; the archive layout changed")
        if flatten:
            _flatten(content, tmp / "flat")
            content = tmp / "flat"
        if dest.exists():
            _move_into(content, dest)
        else:
            os.replace(content, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
