"""Whole datasets: fetch each resource once, mark it done, link shared folders, mark complete.

Bookkeeping lives in ``<root>/.downloads``: partial files (``*.part``), one ``.done`` marker per
finished resource and ``<name>.complete`` per finished dataset, so a second run does nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from retrieval.data.download.archives import extract_archive
from retrieval.data.download.registry import REGISTRY, DatasetSpec, Resource
from retrieval.data.download.transfer import DownloadError, download_file

logger = logging.getLogger(__name__)

STATE_DIR = ".downloads"


def _marker(state: Path, resource: Resource) -> Path:
    key = hashlib.sha1(f"{resource.url}|{resource.dest}".encode()).hexdigest()[:10]
    return state / f"{Path(resource.url).name}-{key}.done"


def _published_md5(resource: Resource, workdir: Path, options: dict) -> str | None:
    if not resource.md5_url:
        return resource.md5
    target = workdir / Path(resource.md5_url).name
    md5_file = download_file(resource.md5_url, target, **{**options, "progress": False})
    text = md5_file.read_text().split()
    md5_file.unlink()
    if not text or not re.fullmatch(r"[0-9a-fA-F]{32}", text[0]):
        raise DownloadError(f"{resource.md5_url} does not start with an md5 checksum")
    return text[0]


def _fetch(resource: Resource, root: Path, state: Path, options: dict) -> None:
    if not resource.extract:
        md5 = _published_md5(resource, state, options)
        download_file(
            resource.url, root / resource.dest, sha256=resource.sha256, md5=md5, **options
        )
        return
    archive, dest = state / Path(resource.url).name, root / resource.dest
    # a finished archive only gets its final name once verified: reuse it after an interruption
    if not archive.exists():
        md5 = _published_md5(resource, state, options)
        download_file(resource.url, archive, sha256=resource.sha256, md5=md5, **options)
    logger.info("extracting %s into %s", archive.name, dest)
    try:
        extract_archive(archive, dest, flatten=resource.flatten, subdir=resource.subdir)
    except DownloadError:
        archive.unlink(missing_ok=True)
        raise
    archive.unlink()


def _link(root: Path, dest: str, target: str) -> None:
    link, goal = root / dest, root / target
    if link.exists() or link.is_symlink():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(goal, link.parent), link, target_is_directory=True)


def download_dataset(
    name: str,
    root: str | Path,
    *,
    force: bool = False,
    parts: Iterable[int] | None = None,
    registry: dict[str, DatasetSpec] | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    retry_wait: float = 2.0,
) -> bool:
    """Download dataset ``name`` under ``root``; True once every resource is in place.

    ``parts`` restricts sharded datasets to some shards (the rest can follow in later runs).
    """
    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(registry))}")
    spec = registry[name]
    options = {"timeout": timeout, "retries": retries, "retry_wait": retry_wait}
    root = Path(root)
    state = root / STATE_DIR / name
    complete = root / STATE_DIR / f"{name}.complete"
    if force:
        shutil.rmtree(state, ignore_errors=True)
        complete.unlink(missing_ok=True)
    if complete.exists():
        logger.info("%s already downloaded under %s (use --force to redo)", name, root)
        return True
    for required in spec.requires:
        if not download_dataset(required, root, registry=registry, **options):
            return False
    wanted = set(parts) if parts is not None else None
    state.mkdir(parents=True, exist_ok=True)
    for resource in spec.resources:
        marker = _marker(state, resource)
        if marker.exists() or (wanted is not None and resource.part not in wanted):
            continue
        logger.info("%s: %s -> %s", name, resource.url, root / resource.dest)
        _fetch(resource, root, state, options)
        marker.write_text(resource.url + "\n")
    if not all(_marker(state, r).exists() for r in spec.resources):
        missing = sum(not _marker(state, r).exists() for r in spec.resources)
        logger.info("%s: %d part(s) still to download", name, missing)
        return False
    for dest, target in spec.links:
        _link(root, dest, target)
    complete.write_text("\n".join(r.url for r in spec.resources) + "\n")
    shutil.rmtree(state, ignore_errors=True)
    logger.info("%s complete under %s", name, root)
    return True
