"""ClassDataModule: batches of m classes x k images from class-labelled images (kind=classes)."""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from retrieval.data.classes import (
    ClassBatchDataset,
    ClassBatchSampler,
    LabelledImages,
    eligible_classes,
)


@dataclass
class ClassBatchConfig:
    """How label batches are drawn and prepared."""

    classes_per_batch: int = 16
    images_per_class: int = 8
    small_classes: str = "drop"
    batches_per_epoch: int | None = None
    image_size: int = 256
    num_workers: int = 0
    seed: int = 0


class ClassDataModule(pl.LightningDataModule):
    """Serves m x k label batches: new ones every epoch for training, fixed ones for validation.

    Under DDP each rank gets whole batches (Lightning spreads the sampler's batches over the
    ranks); the module gathers the descriptors so the loss sees the global batch.
    """

    def __init__(
        self,
        train: LabelledImages,
        config: ClassBatchConfig,
        val: LabelledImages | None = None,
    ) -> None:
        super().__init__()
        self.images = {"train": train, "val": val}
        self.config = c = config
        self.samplers = {
            "train": ClassBatchSampler(
                train.labels,
                c.classes_per_batch,
                c.images_per_class,
                c.small_classes,
                c.batches_per_epoch,
                c.seed,
                "training set",
            )
        }
        if val is not None:
            eligible = eligible_classes(val.labels, c.images_per_class, c.small_classes, "val set")
            self.samplers["val"] = ClassBatchSampler(
                val.labels,
                min(c.classes_per_batch, len(eligible)),
                c.images_per_class,
                c.small_classes,
                None,
                c.seed + 7919,
                "val set",
            )

    def _dataloader(self, split: str, epoch: int) -> DataLoader:
        sampler = self.samplers[split]
        sampler.set_epoch(epoch)
        meta = self.trainer.lightning_module.net.meta
        dataset = ClassBatchDataset(
            self.images[split], self.config.image_size, meta["mean"], meta["std"]
        )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,  # the sampler yields whole batches
            num_workers=self.config.num_workers,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._dataloader("train", self.trainer.current_epoch)

    def val_dataloader(self) -> DataLoader | list:
        return self._dataloader("val", 0) if "val" in self.samplers else []
