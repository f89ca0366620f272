"""Where worlds live and their reuse: one folder per parameter hash, generated once, atomically."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrieval.data.synthetic.config import SyntheticConfig, as_config
from retrieval.data.synthetic.writer import generate_world


def default_root(config: SyntheticConfig, base: str | Path | None = None) -> Path:
    """``<base>/synthetic/<hash>``, base defaulting to $RETRIEVAL_DATA, else ~/.cache/retrieval."""
    if base is None:
        base = os.environ.get("RETRIEVAL_DATA")
    parent = Path(base).expanduser() if base else Path.home() / ".cache" / "retrieval"
    return parent / "synthetic" / config.key()


def read_world_info(root: str | Path) -> dict[str, Any] | None:
    """The world's ``world.json`` content, or None when absent or unreadable."""
    try:
        return json.loads((Path(root) / "world.json").read_text())
    except (OSError, ValueError):
        return None


def ensure_world(
    root: str | Path | None = None,
    config: SyntheticConfig | Mapping[str, Any] | None = None,
    force: bool = False,
    base: str | Path | None = None,
) -> Path:
    """The world folder for ``config``, generated only if missing or made with other parameters.

    Without ``root`` the world lives at :func:`default_root` (under ``base`` when given). It is
    written into a temporary folder beside ``root`` and renamed into place, so an interrupted
    run never leaves a half-written world behind.
    """
    config = as_config(config)
    root = Path(root).expanduser() if root is not None else default_root(config, base)
    info = read_world_info(root)
    if not force and info is not None and info.get("hash") == config.key():
        return root
    if root.exists() and info is None and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and holds no synthetic world (no world.json); "
            "choose an empty or new folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root.parent / f".{root.name}.tmp-{tag}"
    try:
        generate_world(tmp, config)
        current = read_world_info(root)
        if not force and current is not None and current.get("hash") == config.key():
            return root  # another process finished the same world first
        old = root.parent / f".{root.name}.old-{tag}"
        if root.exists():
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            # Another process put a world in place meanwhile: keep it if it is ours.
            current = read_world_info(root)
            if current is None or current.get("hash") != config.key():
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
