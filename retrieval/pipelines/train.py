"""The training job: data sources from the config, the module, the trainer, before/after figures."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from retrieval.config import build_net_from_config, validate_train_config
from retrieval.data import formats
from retrieval.data.datamodules import MiningConfig, TupleDataModule, TupleSource
from retrieval.data.tuples import sfm_db_from_labels
from retrieval.eval.benchmarks import (
    ExtractionSettings,
    evaluate_net,
    leave_one_out_benchmark,
    load_benchmark,
)
from retrieval.lightning.callbacks import AtomicCheckpointIO
from retrieval.lightning.module import RetrievalModule
from retrieval.models.net import RetrievalNet, save_checkpoint
from retrieval.pipelines.loggers import build_loggers

log = logging.getLogger(__name__)


def data_root(cfg: DictConfig) -> Path:
    """The dataset root: the configured one, or the (generated or cached) synthetic world."""
    if cfg.data.get("root"):
        return Path(str(cfg.data.root)).expanduser()
    from retrieval.data.synthetic import SyntheticConfig, ensure_world

    params = OmegaConf.to_container(cfg.data.get("synthetic") or {}, resolve=True)
    return ensure_world(None, SyntheticConfig(**params))


def _sfm_source(split: formats.SfmSplit, sidecar: Path | None) -> TupleSource:
    candidates = None
    if sidecar is not None:  # its existence is checked at start-up, in build_sources
        candidates = formats.read_positives_sidecar(sidecar, len(split.cids)).to_lists()
    return TupleSource(
        list(split.image_paths),
        np.asarray(split.cluster),
        np.asarray(split.qidxs),
        np.asarray(split.pidxs),
        candidates,
    )


def _label_source(paths: list[Path], labels: np.ndarray, seed: int) -> TupleSource:
    db = sfm_db_from_labels(labels, seed=seed)
    return TupleSource(
        paths,
        np.asarray(db["cluster"]),
        np.asarray(db["qidxs"]),
        np.asarray(db["pidxs"]),
        db.get("candidates"),
    )


def build_sources(cfg: DictConfig) -> tuple[TupleSource, TupleSource | None, Any]:
    """Training and validation tuple sources, and the validation benchmark."""
    root, data = data_root(cfg), cfg.data
    if data.kind == "sfm":
        splits = formats.load_sfm_db(root, data.name)
        sidecar = formats.sfm_dir(root, data.name) / f"{data.name}-positives.npz"
        if data.positives != "fixed" and not sidecar.is_file():
            raise FileNotFoundError(
                f"data.positives={data.positives} needs the positives sidecar {sidecar} (shared "
                "3D points per image pair); use data.positives=fixed without it."
            )
        train = _sfm_source(splits["train"], sidecar if data.positives != "fixed" else None)
        val = _sfm_source(splits["val"], None) if "val" in splits else None
        benchmark = load_benchmark(data.benchmark, root)
        return train, val, benchmark
    if data.kind == "labels":
        paths, labels = formats.read_labelled_images(root)
        n_train = int(data.get("train_classes") or (labels.max() + 1) // 2)
        is_train = labels < n_train
        train_paths = [p for p, t in zip(paths, is_train, strict=True) if t]
        test_paths = [p for p, t in zip(paths, is_train, strict=True) if not t]
        train = _label_source(train_paths, labels[is_train], cfg.seed)
        val = _label_source(test_paths, labels[~is_train], cfg.seed)
        benchmark = leave_one_out_benchmark(f"{data.name}-test", test_paths, labels[~is_train])
        return train, val, benchmark
    raise ValueError(f"Unknown data.kind={data.kind!r}; valid: sfm, labels")


def make_evaluator(cfg: DictConfig, benchmark: Any) -> Callable[[RetrievalNet], dict[str, float]]:
    """A function net -> validation figures on the benchmark (no cache: the net changes)."""

    def evaluate(net: RetrievalNet) -> dict[str, float]:
        device = next(net.parameters()).device
        settings = ExtractionSettings(
            image_size=int(cfg.data.test_image_size),
            scales=tuple(cfg.data.test_scales),
            batch_size=int(cfg.data.mining_batch_size),
            device=device,
            progress=False,
        )
        return evaluate_net(net, benchmark, settings)[0]

    return evaluate


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; returns the validation figures before and after, and the run paths."""
    validate_train_config(cfg)
    pl.seed_everything(int(cfg.seed), workers=True)
    run_dir = Path(str(cfg.run_dir))
    train_src, val_src, benchmark = build_sources(cfg)
    net = build_net_from_config(cfg)
    if cfg.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    evaluator = make_evaluator(cfg, benchmark)
    module = RetrievalModule(
        net,
        loss=OmegaConf.to_container(cfg.loss),
        optimizer=OmegaConf.to_container(cfg.optimizer),
        freeze_bn=bool(cfg.freeze_bn),
        seed=int(cfg.seed),
        evaluator=evaluator,
    )
    data = cfg.data
    mining = MiningConfig(
        qsize=int(data.qsize),
        poolsize=int(data.poolsize),
        nnum=int(data.nnum),
        positives=str(data.positives),
        positive_topk=int(data.positive_topk),
        image_size=int(data.image_size),
        batch_size=int(data.batch_size),
        mining_batch_size=int(data.mining_batch_size),
        num_workers=int(data.num_workers),
        margin=float(cfg.loss.margin),
        loss=str(cfg.loss.name),
        seed=int(cfg.seed),
    )
    datamodule = TupleDataModule(train_src, mining, val_src, output_dir=run_dir)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/M/mAP" if benchmark.protocol == "revisited" else "val/mAP",
        mode="max",
        save_last=True,
    )
    callbacks = [checkpoints]
    loggers = build_loggers(cfg)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )
    device = trainer.strategy.root_device  # evaluate where training runs
    before = evaluator(net.to(device)) if cfg.evaluate_before and cfg.ckpt_path is None else None
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    after = evaluator(module.net.to(device))  # fit may have moved it back to the CPU
    model_path = None
    if trainer.is_global_zero:
        model_path = save_checkpoint(
            run_dir / "model.pt", module.net.cpu(), epoch=trainer.current_epoch, figures=after
        )
    return {
        "before": before,
        "after": after,
        "run_dir": str(run_dir),
        "model": str(model_path) if model_path else None,
        "best_checkpoint": checkpoints.best_model_path,
        "benchmark": benchmark.name,
    }
