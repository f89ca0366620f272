"""The training job: data sources from the config, the module, the trainer, before/after figures."""

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
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from retrieval.atomic import atomic_write
from retrieval.checkpoint import save_checkpoint
from retrieval.data import formats
from retrieval.data.classes import label_splits, write_labelled_csv
from retrieval.data.labels import sfm_db_from_labels
from retrieval.eval.benchmarks import (
    ExtractionSettings,
    extract_benchmark,
    leave_one_out_benchmark,
    load_benchmark,
    score_ranks,
)
from retrieval.index import search
from retrieval.lightning.callbacks import AtomicCheckpointIO
from retrieval.lightning.class_datamodule import ClassBatchConfig, ClassDataModule
from retrieval.lightning.module import RetrievalModule
from retrieval.lightning.pictures import ValidationPictures
from retrieval.lightning.tuple_datamodule import MiningConfig, TupleDataModule, TupleSource
from retrieval.models.net import RetrievalNet
from retrieval.pipelines.clean import clean_labelled_images
from retrieval.pipelines.config import (
    ConfigError,
    build_net_from_config,
    extract_options,
    validate_train_config,
    worlds_dir,
)
from retrieval.pipelines.loggers import build_loggers, finish_loggers, hydra_overrides

log = logging.getLogger(__name__)


def data_root(cfg: DictConfig) -> Path:
    """The dataset root: the configured one, or the (generated or cached) synthetic world."""
    if cfg.data.get("root"):
        return Path(str(cfg.data.root)).expanduser()
    if cfg.data.get("synthetic") is None:  # real data, and no root given
        raise ConfigError(
            f"data.root is not set: {cfg.data.name} needs the folder that holds it, e.g. "
            "python train.py data=... data.root=/data (or paths.data_root=/data for both jobs)"
        )
    from retrieval.data.synthetic import SyntheticConfig, ensure_world

    params = OmegaConf.to_container(cfg.data.synthetic, resolve=True)
    return ensure_world(None, SyntheticConfig(**params), base=worlds_dir(cfg))


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
    if data.kind == "classes":  # labelled images, trained with m x k label batches
        train, val = label_splits(
            data.format,
            root,
            data.get("csv"),
            data.get("images"),
            data.missing,
            data.get("val_sfm"),
            data.get("val_classes") or 0,
            int(cfg.seed),
        )
        if data.get("benchmark"):
            benchmark = load_benchmark(data.benchmark, root)
        else:  # leave-one-out over the held-out classes
            benchmark = leave_one_out_benchmark(f"{data.name}-val", val.paths, val.labels)
        return train, val, benchmark
    raise ValueError(f"Unknown data.kind={data.kind!r}; valid: sfm, labels, classes")


class BenchmarkEvaluator:
    """net -> validation figures on a benchmark (no cache: the net changes); keeps the last ranks
    (for the pictures) and the extraction throughput (for the loggers)."""

    def __init__(self, benchmark: Any, settings: ExtractionSettings) -> None:
        self.benchmark, self.settings = benchmark, settings
        self.last_ranks: np.ndarray | None = None
        self.last_statistics: dict[str, float] = {}

    def __call__(self, net: RetrievalNet) -> dict[str, float]:
        settings = dataclasses.replace(self.settings, device=next(net.parameters()).device)
        start = time.perf_counter()
        database, queries = extract_benchmark(net, self.benchmark, settings)
        seconds = time.perf_counter() - start
        _, self.last_ranks = search(database, queries)
        self.last_statistics = {
            "extract_seconds": seconds,
            "extract_images_per_second": (len(database) + len(queries)) / seconds,
        }
        return score_ranks(self.benchmark, self.last_ranks)


def make_evaluator(cfg: DictConfig, benchmark: Any) -> BenchmarkEvaluator:
    """The validation evaluator of the configured benchmark."""
    settings = ExtractionSettings(
        image_size=int(cfg.data.test_image_size),
        scales=tuple(cfg.data.test_scales),
        batch_size=int(cfg.data.mining_batch_size),
        progress=False,
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
    validate_train_config(cfg)
    pl.seed_everything(int(cfg.seed), workers=True)
    run_dir = Path(str(cfg.run_dir))
    train_src, val_src, benchmark = build_sources(cfg)
    net = build_net_from_config(cfg)
    if cfg.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
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
        datamodule = TupleDataModule(train_src, _mining_config(cfg), val_src, output_dir=run_dir)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/M/mAP" if benchmark.protocol == "revisited" else "val/mAP",
        mode="max",
        save_last=True,
    )
    callbacks = [checkpoints]
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
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
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
        "best_checkpoint": checkpoints.best_model_path,
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
