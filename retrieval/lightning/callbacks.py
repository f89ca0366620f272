"""Lightning plugins and callbacks: atomic checkpoints, best.ckpt and last.ckpt."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol, get_filesystem
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


class LatestEpochCheckpoint(ModelCheckpoint):
    """last.ckpt every epoch; a hard link to best.ckpt when `best` saved this very step."""

    def __init__(self, dirpath: Path, best: ModelCheckpoint) -> None:
        # No monitor: saved every epoch, after `best`, over itself.
        super().__init__(dirpath=dirpath, filename="last", enable_version_counter=False)
        self.best = best

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Link instead of writing the same ~40 MB twice; write when linking is not possible."""
        if not self._best_saved_now(trainer):
            return super()._save_checkpoint(trainer, filepath)
        linked = not trainer.is_global_zero or link_replacing(self.best.best_model_path, filepath)
        # Every rank takes the same branch: a write on some ranks only would hang at its barrier.
        if not trainer.strategy.reduce_boolean_decision(linked, all=True):
            return super()._save_checkpoint(trainer, filepath)
        trainer.strategy.barrier("LatestEpochCheckpoint.link")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _best_saved_now(self, trainer: pl.Trainer) -> bool:
        """Whether best.ckpt holds this step, written by the atomic IO to a local file."""
        best = self.best
        return (
            best._last_global_step_saved == trainer.global_step
            and bool(best.best_model_path)
            and best._last_checkpoint_saved == best.best_model_path
            and _is_local_file_protocol(best.best_model_path)
            # Only an IO that replaces files by rename keeps the two names apart afterwards.
            and isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
        )


def link_replacing(target: str | Path, linkpath: str | Path) -> bool:
    """Make `linkpath` a hard link to `target` by rename (atomic); False where links fail."""
    linkpath = Path(linkpath)
    tmp = linkpath.with_name(f".{linkpath.name}.{os.getpid()}.link")
    try:
        tmp.unlink(missing_ok=True)  # left by a killed run
        os.link(target, tmp)
        os.replace(tmp, linkpath)  # never opened for writing: the other name keeps its bytes
    except OSError:  # no hard links on this file system (some network or FAT mounts)
        tmp.unlink(missing_ok=True)
        return False
    return True


def checkpoint_callbacks(dirpath: Path, monitor: str) -> list[ModelCheckpoint]:
    """best.ckpt (highest `monitor`) and last.ckpt (the end of the latest finished epoch)."""
    best = ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode="max")
    # Not save_last=True on `best`: Lightning writes that last.ckpt only when a best is saved.
    # Not save_last="link": a symbolic link would follow best.ckpt when a later best replaces it.
    return [best, LatestEpochCheckpoint(dirpath, best)]
