"""Checkpoints of a real (tiny) training run: last.ckpt is the latest epoch, resume is exact and
safe, and a damaged or hostile checkpoint is refused with a message naming it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from retrieval.checkpoint import CheckpointError
from retrieval.data import formats
from retrieval.lightning.callbacks import AtomicCheckpointIO, checkpoint_callbacks
from retrieval.lightning.module import RetrievalModule
from retrieval.lightning.tuple_datamodule import MiningConfig, TupleDataModule, TupleSource
from retrieval.models.net import build_net

MINING = MiningConfig(qsize=4, poolsize=12, nnum=2, image_size=64, batch_size=2, precision="fp32")
OPTIM = {"name": "adam", "lr": 1e-6}


def source(root: Path, split: str) -> TupleSource:
    db = formats.load_sfm_db(root, "synthetic-sfm")[split]
    return TupleSource(
        list(db.image_paths), np.asarray(db.cluster), np.asarray(db.qidxs), np.asarray(db.pidxs)
    )


class FallingMap:
    """A validation 'benchmark' whose mAP only falls: the best checkpoint stays at epoch 0."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, net) -> dict[str, float]:
        self.calls += 1
        return {"mAP": 100.0 / self.calls}


class RisingMap(FallingMap):
    """A validation 'benchmark' whose mAP only rises: every epoch is the best so far."""

    def __call__(self, net) -> dict[str, float]:
        self.calls += 1
        return {"mAP": float(self.calls)}


def fit(
    world, run_dir: Path, max_epochs: int, ckpt_path: Path | None = None, evaluator=FallingMap
) -> pl.Trainer:
    """Train the tiny module as train.py does (its checkpoint callbacks and IO)."""
    torch.manual_seed(0)
    net = build_net("resnet18", "gem", weights="none")
    module = RetrievalModule(
        net, {"name": "contrastive", "margin": 0.7}, OPTIM, evaluator=evaluator()
    )
    data = TupleDataModule(source(world, "train"), MINING, source(world, "val"), output_dir=run_dir)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=checkpoint_callbacks(run_dir / "checkpoints", monitor="val/mAP"),
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer


def saved_at(path: Path) -> tuple[int, int]:
    payload = torch.load(path, weights_only=True)
    return payload["epoch"], payload["global_step"]


def test_last_checkpoint_is_the_latest_epoch_and_resume_redoes_none(world, tmp_path):
    killed = fit(world, tmp_path / "killed", max_epochs=2)  # killed after its second epoch
    best = tmp_path / "killed" / "checkpoints" / "best.ckpt"
    assert saved_at(best)[0] == 0, "the falling mAP keeps the best at epoch 0"
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert saved_at(last) == (1, killed.global_step)
    assert last.stat().st_ino != best.stat().st_ino, "epoch 1 replaced the link, not its bytes"
    resumed = fit(world, tmp_path / "resumed", max_epochs=3, ckpt_path=last)
    assert resumed.global_step == killed.global_step * 3 // 2, "only the third epoch ran"
    assert saved_at(tmp_path / "resumed" / "checkpoints" / "last.ckpt") == (2, resumed.global_step)
    mined = sorted(p.name for p in (tmp_path / "resumed" / "tuples").glob("train_*.npz"))
    assert mined == ["train_epoch002.npz"], "no tuples mined for epochs the resumed run skips"


def disk_bytes(folder: Path) -> int:
    """Bytes the files under `folder` hold, a hard-linked file counted once (as du does)."""
    sizes = {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size for p in folder.rglob("*.ckpt")}
    return sum(sizes.values())


def test_last_checkpoint_equal_to_best_is_a_hard_link_and_resumes(world, tmp_path):
    run = fit(world, tmp_path / "run", max_epochs=2, evaluator=RisingMap)
    best, last = (tmp_path / "run" / "checkpoints" / f"{n}.ckpt" for n in ("best", "last"))
    assert saved_at(best) == saved_at(last) == (1, run.global_step), "both hold the last epoch"
    assert best.stat().st_ino == last.stat().st_ino, "last.ckpt is a second copy of best.ckpt"
    assert disk_bytes(tmp_path / "run") == best.stat().st_size, "one checkpoint's bytes on disk"
    assert not list(last.parent.glob(".*")), "no temporary file left beside them"
    resumed = fit(world, tmp_path / "resumed", max_epochs=3, ckpt_path=last, evaluator=RisingMap)
    assert resumed.global_step == run.global_step * 3 // 2, "only the third epoch ran"
    assert saved_at(last) == (1, run.global_step), "the resumed run's writes left it as it was"


class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_resume_never_unpickles_code(world, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's default is no guard
    marker, hostile = tmp_path / "pwned", tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "epoch": Payload(marker)}, hostile, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=f"{hostile}.*not a checkpoint written by"):
        fit(world, tmp_path / "run", max_epochs=1, ckpt_path=hostile)
    assert not marker.exists(), "the checkpoint's pickled code ran"


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_resume_from_a_damaged_checkpoint_names_it(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(b"" if damage == "empty" else path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is empty or truncated"):
        AtomicCheckpointIO().load_checkpoint(path)
