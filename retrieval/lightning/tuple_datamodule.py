"""TupleDataModule: SfM tuples re-mined every epoch with the current network (Radenovic et al.)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from retrieval.data.augment import Augmentation
from retrieval.data.epoch_tuples import EpochTuples
from retrieval.data.tuple_dataset import TupleDataset, collate_tuples
from retrieval.data.tuples import (
    choose_positives,
    epoch_generator,
    mine_hard_negatives,
    mining_statistics,
    sample_epoch,
    validate_mining_setup,
)
from retrieval.extraction.extract import extract_distributed

log = logging.getLogger(__name__)


@dataclass
class TupleSource:
    """One split of an SfM-like database: images, their 3D model ids and query-positive pairs."""

    paths: list[Path]
    clusters: np.ndarray
    qidxs: np.ndarray
    pidxs: np.ndarray
    candidates: list | None = None  # per image: rows of (positive image, shared 3D points)

    def as_split(self) -> dict[str, Any]:
        """The split in retrieval-SfM-120k's keys, for validation."""
        return {
            "cids": [str(p) for p in self.paths],
            "cluster": self.clusters,
            "qidxs": self.qidxs,
            "pidxs": self.pidxs,
        }


@dataclass
class MiningConfig:
    """What one epoch draws and mines."""

    qsize: int = 2000
    poolsize: int = 22000
    nnum: int = 5
    positives: str = "fixed"
    positive_topk: int = 5
    image_size: int = 362
    batch_size: int = 5
    mining_batch_size: int = 32
    num_workers: int = 0
    margin: float = 0.7
    loss: str = "contrastive"
    seed: int = 0
    precision: str = "fp32"  # of the mining extraction; auto: per device (resolve_precision)
    channels_last: bool = False
    fold_bn: bool = True
    compile: bool = False


class TupleDataModule(pl.LightningDataModule):
    """Serves tuples (q, p, n1..nk) mined before every epoch with the module's current network."""

    def __init__(
        self,
        train: TupleSource,
        config: MiningConfig,
        val: TupleSource | None = None,
        output_dir: str | Path | None = None,
        augment: Augmentation | None = None,
    ) -> None:
        super().__init__()
        self.sources = {"train": train, "val": val}
        self.config = config
        self.augment = augment  # training images only: mining and validation see them plain
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.last_statistics: dict[str, float] = {}
        self._mined: dict[str, EpochTuples] = {}
        for split, source in self.sources.items():
            if source is not None:
                validate_mining_setup(
                    source.as_split(),
                    nnum=config.nnum,
                    poolsize=config.poolsize,
                    qsize=config.qsize,
                    candidates=source.candidates if self.strategy(split) != "fixed" else None,
                    split_name="training" if split == "train" else "validation",
                )

    def strategy(self, split: str) -> str:
        """Positive strategy of a split: the configured one for training, the db pairs for val."""
        return self.config.positives if split == "train" else "fixed"

    # -- mining ---------------------------------------------------------------------------------
    def mine(self, net: torch.nn.Module, epoch: int, split: str = "train") -> EpochTuples:
        """Draw the epoch's pairs and pool, extract them with `net` and select the tuples.

        The draws depend only on (seed, split, epoch), so every DDP rank and a resumed run mine
        the same tuples; each rank extracts its share of the images and all gather the rest.
        """
        source, cfg = self.sources[split], self.config
        start = time.perf_counter()
        generator = epoch_generator(cfg.seed + (split == "val") * 7919, epoch)
        pairs, pool = sample_epoch(
            len(source.qidxs), cfg.qsize, len(source.paths), cfg.poolsize, generator
        )
        queries = torch.as_tensor(source.qidxs)[pairs]
        fixed = torch.as_tensor(source.pidxs)[pairs]
        strategy = self.strategy(split)
        if strategy == "hardest":  # needs the descriptors of every candidate positive
            positives, extra = None, _candidate_ids(source, queries)
        else:
            positives = choose_positives(
                strategy,
                queries,
                fixed,
                source.candidates,
                topk=cfg.positive_topk,
                generator=generator,
            )
            extra = positives
        ids = torch.unique(torch.cat([queries, pool, extra]))
        lookup = _DescriptorLookup(ids, torch.from_numpy(self._extract(net, source, ids, split)))
        query_desc = lookup(queries)
        if positives is None:
            positives = choose_positives(
                "hardest",
                queries,
                fixed,
                source.candidates,
                query_desc=query_desc,
                desc_lookup=lookup,
            )
        clusters = torch.as_tensor(source.clusters)
        neg_pos, neg_sims = mine_hard_negatives(
            query_desc, lookup(pool), clusters[queries], clusters[pool], cfg.nnum
        )
        negatives = pool[neg_pos]
        pos_desc = lookup(positives)
        tuples = EpochTuples(
            query=queries,
            positive=positives,
            negatives=negatives,
            neg_sims=neg_sims,
            pos_sims=(query_desc * pos_desc).sum(-1),
            epoch=epoch,
        )
        stats = mining_statistics(
            query_desc, pos_desc, lookup(negatives), margin=cfg.margin, loss=cfg.loss
        )
        seconds = time.perf_counter() - start
        stats.update(seconds=seconds, images_per_second=len(ids) / seconds)
        self.last_statistics = {f"{split}/mining_{k}": float(v) for k, v in stats.items()}
        log.info(
            "mined %s tuples of epoch %d: %d images in %.1f s (%.1f images/s)",
            *(split, epoch, len(ids), seconds, len(ids) / seconds),
        )
        self._save(tuples, split)
        return tuples

    def _extract(
        self, net: torch.nn.Module, source: TupleSource, ids: torch.Tensor, split: str
    ) -> np.ndarray:
        return extract_distributed(
            net,
            [source.paths[i] for i in ids.tolist()],
            max_side=self.config.image_size,
            batch_size=self.config.mining_batch_size,
            device=next(net.parameters()).device,
            num_workers=self.config.num_workers,
            precision=self.config.precision,
            channels_last=self.config.channels_last,
            fold_bn=self.config.fold_bn,
            compile=self.config.compile,
            progress=self._rank_zero(),  # one bar under DDP
            desc=f"mining {split}",
        )

    def _rank_zero(self) -> bool:
        return self.trainer is None or self.trainer.is_global_zero

    def _save(self, tuples: EpochTuples, split: str) -> None:
        if self.output_dir is not None and self._rank_zero():
            tuples.save(self.output_dir / "tuples" / f"{split}_epoch{tuples.epoch:03d}.npz")

    def _epoch_tuples(self, split: str) -> EpochTuples:
        """The tuples of the epoch about to run; training tuples are mined once per epoch."""
        trainer = self.trainer
        epoch = _epoch_to_run(trainer) if split == "train" else trainer.current_epoch
        cached = self._mined.get(split)
        if split == "train" and cached is not None and cached.epoch == epoch:
            return cached  # a resumed run asks for the first epoch's loader twice
        self._mined[split] = self.mine(trainer.lightning_module.net, epoch, split)
        for logger in trainer.loggers:
            logger.log_metrics(self.last_statistics, step=trainer.global_step)
        return self._mined[split]

    def _dataloader(self, split: str) -> DataLoader:
        module = self.trainer.lightning_module
        tuples = self._epoch_tuples(split)
        source = self.sources[split]
        mean, std = module.net.meta["mean"], module.net.meta["std"]
        augment = self.augment if split == "train" else None
        dataset = TupleDataset(
            source.paths, tuples, self.config.image_size, mean, std, augment, self.config.seed
        )
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=split == "train",
            collate_fn=collate_tuples,
            num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(self.config.seed + tuples.epoch),
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._dataloader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self._dataloader("val") if self.sources["val"] is not None else []


def _epoch_to_run(trainer: Any) -> int:
    """The training epoch about to run. Resuming, Lightning asks for the loader (FitLoop.run:
    setup_data) before it moves current_epoch past the checkpoint's finished epoch (on_run_start:
    completed = processed); `processed` already counts it."""
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is None:
        return int(trainer.current_epoch)
    return max(int(trainer.current_epoch), int(fit_loop.epoch_progress.current.processed))


class _DescriptorLookup:
    """Descriptors of image ids, from the sorted subset of ids that was extracted."""

    def __init__(self, sorted_ids: torch.Tensor, desc: torch.Tensor) -> None:
        self.ids, self.desc = sorted_ids, desc

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.desc[torch.searchsorted(self.ids, ids.reshape(-1))].reshape(*ids.shape, -1)


def _candidate_ids(source: TupleSource, queries: torch.Tensor) -> torch.Tensor:
    if source.candidates is None:
        return torch.as_tensor(source.pidxs)
    ids = [p for q in queries.tolist() for p, _ in source.candidates[q]]
    return torch.as_tensor(ids, dtype=torch.long)
