"""Training data from the config: the dataset root, the train/val sources of each data kind and
the validation benchmark."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from retrieval.data import formats
from retrieval.data.classes import label_splits
from retrieval.data.labels import sfm_db_from_labels
from retrieval.eval.benchmarks import leave_one_out_benchmark, load_benchmark
from retrieval.lightning.tuple_datamodule import TupleSource
from retrieval.pipelines.config import ConfigError, worlds_dir
from retrieval.types import RetrievalBenchmark

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


Sources = tuple[Any, Any, RetrievalBenchmark]  # training split, validation split, benchmark


def sfm_sources(cfg: DictConfig, root: Path) -> Sources:
    """An SfM database (retrieval-SfM-120k format): its train/val splits and a benchmark."""
    data = cfg.data
    splits = formats.load_sfm_db(root, data.name)
    sidecar = formats.sfm_dir(root, data.name) / f"{data.name}-positives.npz"
    if data.positives != "fixed" and not sidecar.is_file():
        raise FileNotFoundError(
            f"data.positives={data.positives} needs the positives sidecar {sidecar} (shared "
            "3D points per image pair); use data.positives=fixed without it."
        )
    train = _sfm_source(splits["train"], sidecar if data.positives != "fixed" else None)
    val = _sfm_source(splits["val"], None) if _val_can_mine(splits, int(data.nnum)) else None
    return train, val, _sfm_benchmark(data, root, splits)


def _val_can_mine(splits: dict[str, formats.SfmSplit], nnum: int) -> bool:
    """Whether the val split has the nnum + 1 models its tuples need (a small photo set's may
    not: it then has no validation loss, and the benchmark still runs)."""
    if "val" not in splits:
        return False
    models = np.unique(splits["val"].cluster).size
    if models <= nnum:
        log.warning(
            "the val split has %d models, fewer than data.nnum+1=%d: no validation loss",
            models,
            nnum + 1,
        )
    return models > nnum


def _sfm_benchmark(data: DictConfig, root: Path, splits: dict) -> RetrievalBenchmark:
    """The configured benchmark; data.benchmark=null (photos without a test set): every image of
    the val models queries the others (the training models' where there is no val split)."""
    if data.get("benchmark"):
        return load_benchmark(data.benchmark, root)
    name = "val" if "val" in splits else "train"
    split = splits[name]
    return leave_one_out_benchmark(f"{data.name}-{name}", split.image_paths, split.cluster)


def labels_sources(cfg: DictConfig, root: Path) -> Sources:
    """A labelled folder as an SfM-like database: the first labels train, the rest validate."""
    data = cfg.data
    paths, labels = formats.read_labelled_images(root)
    n_train = int(data.get("train_classes") or (labels.max() + 1) // 2)
    is_train = labels < n_train
    train_paths = [p for p, t in zip(paths, is_train, strict=True) if t]
    test_paths = [p for p, t in zip(paths, is_train, strict=True) if not t]
    train = _label_source(train_paths, labels[is_train], cfg.seed)
    val = _label_source(test_paths, labels[~is_train], cfg.seed)
    benchmark = leave_one_out_benchmark(f"{data.name}-test", test_paths, labels[~is_train])
    return train, val, benchmark


def classes_sources(cfg: DictConfig, root: Path) -> Sources:
    """Labelled images trained with m x k class batches: their train/val sets and a benchmark."""
    data = cfg.data
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


# data.kind -> its sources; every conf/data/*.yaml names one of these kinds.
DATA_KINDS: dict[str, Callable[[DictConfig, Path], Sources]] = {
    "sfm": sfm_sources,
    "labels": labels_sources,
    "classes": classes_sources,
}


def build_sources(cfg: DictConfig) -> Sources:
    """Training and validation sources of the configured data, and the validation benchmark."""
    kind = str(cfg.data.kind)
    if kind not in DATA_KINDS:
        raise ValueError(f"Unknown data.kind={kind!r}; valid: {', '.join(DATA_KINDS)}")
    return DATA_KINDS[kind](cfg, data_root(cfg))
