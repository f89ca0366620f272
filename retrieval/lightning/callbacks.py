"""Lightning plugins and callbacks: atomic checkpoints, best.ckpt and last.ckpt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from retrieval.atomic import atomic_write
from retrieval.checkpoint import load_payload


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file, then renames: a kill never leaves half a file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        if not isinstance(get_filesystem(path), type(get_filesystem("."))):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))

    def load_checkpoint(
        self, path: str | Path, map_location: Any = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Resume (`ckpt_path=`) loads tensors and plain containers only, never pickled code."""
        if not isinstance(get_filesystem(path), type(get_filesystem("."))):
            return super().load_checkpoint(path, map_location, weights_only=True)
        return load_payload(path, map_location)


def checkpoint_callbacks(dirpath: Path, monitor: str) -> list[ModelCheckpoint]:
    """best.ckpt (highest `monitor`) and last.ckpt (the end of the latest finished epoch)."""
    best = ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode="max")
    # Not save_last=True on `best`: Lightning writes that last.ckpt only when a best is saved.
    # No monitor: saved every epoch, after `best` (whose state it then holds), over itself.
    last = ModelCheckpoint(dirpath=dirpath, filename="last", enable_version_counter=False)
    return [best, last]
