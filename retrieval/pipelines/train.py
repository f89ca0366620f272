"""The training job: the module, its data, the trainer and the before/after figures."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from retrieval.atomic import atomic_write
from retrieval.checkpoint import save_checkpoint
from retrieval.data.classes import write_labelled_csv
from retrieval.eval.benchmarks import (
    ExtractionSettings,
    extract_benchmark,
    score_ranks,
)
from retrieval.index import search
from retrieval.lightning.callbacks import AtomicCheckpointIO, checkpoint_callbacks
from retrieval.lightning.class_datamodule import ClassBatchConfig, ClassDataModule
from retrieval.lightning.module import RetrievalModule
from retrieval.lightning.pictures import ValidationPictures
from retrieval.lightning.tuple_datamodule import MiningConfig, TupleDataModule
from retrieval.models.net import RetrievalNet
from retrieval.pipelines.accelerator import (
    fall_back_to_cpu_without_gpu,
    resolve_trainer_precision,
)
from retrieval.pipelines.clean import clean_labelled_images
from retrieval.pipelines.config import (
    augmentation_from_config,
    build_net_from_config,
    extract_options,
    validate_train_config,
)
from retrieval.pipelines.known_keys import check_known_keys
from retrieval.pipelines.loggers import (
    build_loggers,
    finish_loggers,
    hydra_overrides,
    silence_lightning_noise,
)
from retrieval.pipelines.sources import build_sources, data_root
from retrieval.pipelines.whitening import start_whitening_from_config

log = logging.getLogger(__name__)


class BenchmarkEvaluator:
    """net -> validation figures on a benchmark (no cache: the net changes); keeps the last ranks
    (for the pictures) and the extraction throughput (for the loggers)."""

    def __init__(self, benchmark: Any, settings: ExtractionSettings) -> None:
        self.benchmark, self.settings = benchmark, settings
        self.last_ranks: np.ndarray | None = None
        self.last_statistics: dict[str, float] = {}

    def __call__(self, net: RetrievalNet) -> dict[str, float]:
        settings = dataclasses.replace(
            self.settings,
            device=next(net.parameters()).device,
            progress=self.settings.progress and rank_zero_only.rank == 0,  # one bar under DDP
        )
        start = time.perf_counter()
        database, queries = extract_benchmark(net, self.benchmark, settings)
        seconds = time.perf_counter() - start
        _, self.last_ranks = search(database, queries)
        images = len(database) + len(queries)
        self.last_statistics = {
            "extract_seconds": seconds,
            "extract_images_per_second": images / seconds,
        }
        log.info(
            "evaluated %s: %d images in %.1f s (%.1f images/s)",
            *(self.benchmark.name, images, seconds, images / seconds),
        )
        return score_ranks(self.benchmark, self.last_ranks)


def make_evaluator(cfg: DictConfig, benchmark: Any) -> BenchmarkEvaluator:
    """The validation evaluator of the configured benchmark."""
    settings = ExtractionSettings(
        image_size=int(cfg.data.test_image_size),
        scales=tuple(cfg.data.test_scales),
        batch_size=int(cfg.data.mining_batch_size),
        progress=True,
        num_workers=int(cfg.data.num_workers),
        **mining_extract_options(cfg),
    )
    return BenchmarkEvaluator(benchmark, settings)


def mining_extract_options(cfg: DictConfig) -> dict[str, Any]:
    """Precision, memory format, folding and compilation of mining and validation extraction."""
    options = extract_options(cfg)
    del options["num_workers"]  # data.num_workers loads the training images too
    return options


def pictures_callback(
    cfg: DictConfig, evaluator: BenchmarkEvaluator, run_dir: Path
) -> ValidationPictures | None:
    """The validation pictures callback as configured (`pictures.queries=0`: none)."""
    pictures = cfg.get("pictures") or {}
    if int(pictures.get("queries", 0)) <= 0:
        return None
    return ValidationPictures(
        evaluator.benchmark,
        lambda: evaluator.last_ranks,
        run_dir / "pictures",
        image_size=int(cfg.data.test_image_size),
        tuples_dir=run_dir / "tuples",
        queries=int(pictures.queries),
        top=int(pictures.get("top", 10)),
        matches=int(pictures.get("matches", 5)),
    )


def trainer_device(cfg: DictConfig) -> str:
    """The device the configured trainer trains on (for work done before fit)."""
    gpu = cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return "cuda" if gpu else "cpu"


def _class_datamodule(cfg: DictConfig, train_src: Any, val_src: Any) -> ClassDataModule:
    """The m x k label-batch data module as configured."""
    data = cfg.data
    batches = ClassBatchConfig(
        classes_per_batch=int(data.classes_per_batch),
        images_per_class=int(data.images_per_class),
        small_classes=str(data.small_classes),
        batches_per_epoch=data.get("batches_per_epoch"),
        image_size=int(data.image_size),
        num_workers=int(data.num_workers),
        seed=int(cfg.seed),
    )
    return ClassDataModule(train_src, batches, val_src)


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; returns the validation figures before and after, and the run paths."""
    silence_lightning_noise()
    check_known_keys(cfg, "train")
    validate_train_config(cfg)
    fall_back_to_cpu_without_gpu(cfg)  # before any work: trainer=gpu on a CPU-only machine
    pl.seed_everything(int(cfg.seed), workers=True)
    run_dir = Path(str(cfg.run_dir))
    train_src, val_src, benchmark = build_sources(cfg)
    net = build_net_from_config(cfg)
    options = mining_extract_options(cfg)  # whitening=DIM: Lw from the training pairs (cirtorch -w)
    start_whitening_from_config(cfg, net, data_root(cfg), device=trainer_device(cfg), **options)
    if cfg.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    resolve_trainer_precision(cfg, net)  # trainer.precision=auto: measured on this machine
    evaluator = make_evaluator(cfg, benchmark)
    if cfg.data.kind == "classes" and cfg.data.get("clean"):
        train_src = _cleaned(cfg, net, train_src, run_dir)
    module = RetrievalModule(
        net,
        loss=_loss_arguments(cfg, net, train_src),
        optimizer=OmegaConf.to_container(cfg.optimizer),
        freeze_bn=bool(cfg.freeze_bn),
        seed=int(cfg.seed),
        evaluator=evaluator,
        chunk_size=cfg.data.get("chunk_size"),
    )
    if cfg.data.kind == "classes":
        datamodule = _class_datamodule(cfg, train_src, val_src)
    else:
        datamodule = TupleDataModule(
            train_src,
            _mining_config(cfg),
            val_src,
            output_dir=run_dir,
            augment=augmentation_from_config(cfg.data),
        )
    monitor = "val/M/mAP" if benchmark.protocol == "revisited" else "val/mAP"
    best, last = checkpoint_callbacks(run_dir / "checkpoints", monitor)
    callbacks: list[pl.Callback] = [best, last]
    pictures = pictures_callback(cfg, evaluator, run_dir)
    if pictures is not None:
        callbacks.append(pictures)
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
    # weights_only: resuming never unpickles code (AtomicCheckpointIO enforces it too).
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    after = evaluator(module.net.to(device))  # fit may have moved it back to the CPU
    model_path = None
    if trainer.is_global_zero:
        model_path = save_checkpoint(
            run_dir / "model.pt", module.net.cpu(), epoch=trainer.current_epoch, figures=after
        )
    finish_loggers(loggers)  # a sweep's next job starts a new W&B run
    results = {
        "before": before,
        "after": after,
        "run_dir": str(run_dir),
        "model": str(model_path) if model_path else None,
        "best_checkpoint": best.best_model_path,
        "benchmark": benchmark.name,
        "overrides": hydra_overrides(),
    }
    if trainer.is_global_zero:  # read back by the sweep summary
        text = json.dumps(results, indent=2, default=float)
        atomic_write(run_dir / "results.json", lambda handle: handle.write(text.encode()))
    return results


def _cleaned(cfg: DictConfig, net: RetrievalNet, train_src: Any, run_dir: Path) -> Any:
    """The training classes without the images that disagree with their class (data.clean)."""
    data = cfg.data
    cleaned = clean_labelled_images(
        net,
        train_src,
        k=int(data.clean_k),
        image_size=int(data.image_size),
        batch_size=int(data.mining_batch_size),
        device=trainer_device(cfg),
        num_workers=int(data.num_workers),
    )
    write_labelled_csv(cleaned, run_dir / "train_cleaned.csv")
    return cleaned


def _loss_arguments(cfg: DictConfig, net: RetrievalNet, train_src: Any) -> dict[str, Any]:
    loss = OmegaConf.to_container(cfg.loss)
    if cfg.data.kind == "classes" and str(cfg.loss.name)[:1].isupper():
        # pytorch-metric-learning classification losses (ArcFaceLoss...) size their head from these.
        loss.setdefault("num_classes", len(train_src.classes))
        loss.setdefault("embedding_size", net.out_dim)
    return loss


def _mining_config(cfg: DictConfig) -> MiningConfig:
    data = cfg.data
    return MiningConfig(
        qsize=int(data.qsize),
        poolsize=int(data.poolsize),
        nnum=int(data.nnum),
        positives=str(data.positives),
        positive_topk=int(data.positive_topk),
        image_size=int(data.image_size),
        batch_size=int(data.batch_size),
        mining_batch_size=int(data.mining_batch_size),
        num_workers=int(data.num_workers),
        # Mining statistics use the contrastive form for losses without a margin (AP).
        margin=float(cfg.loss.get("margin", 0.7)),
        loss=str(cfg.loss.name) if cfg.loss.name == "triplet" else "contrastive",
        seed=int(cfg.seed),
        **mining_extract_options(cfg),
    )
