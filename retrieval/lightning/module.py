"""RetrievalModule: the training glue around RetrievalNet, a loss (on SfM tuples or on batches of
labelled images, directly or in multi-stage chunks) and the optimiser."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from retrieval.checkpoint import LIGHTNING_META_KEY
from retrieval.lightning.multistage import (
    embed_without_grad,
    gather_rows,
    gather_rows_with_grad,
    multistage_backward,
)
from retrieval.losses import build_loss
from retrieval.models.net import RetrievalNet, embed_images

TupleBatch = list[tuple[list[torch.Tensor], torch.Tensor]]
# A batch of labelled images: {"images": B x 3 x S x S (zero-padded), "sizes": B x 2, "labels": B}.
LabelBatch = dict[str, torch.Tensor]


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode: running statistics are used, not updated."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _full_precision(descriptors: torch.Tensor) -> torch.Tensor:
    """Descriptors in at least float32 (a whitening layer under bf16-mixed hands over bf16)."""
    return descriptors.to(torch.promote_types(descriptors.dtype, torch.float32))


# optimizer.name -> (parameter groups, learning rate, optimizer config) -> optimizer; 1:1 with
# conf/optimizer/*.yaml.
OPTIMIZERS: dict[str, Callable[[list[dict], float, dict[str, Any]], torch.optim.Optimizer]] = {
    "adam": lambda groups, lr, cfg: torch.optim.Adam(groups, lr=lr),
    "sgd": lambda groups, lr, cfg: torch.optim.SGD(
        groups, lr=lr, momentum=float(cfg.get("momentum", 0.9))
    ),
}


class RetrievalModule(pl.LightningModule):
    """Fine-tunes a RetrievalNet on (query, positive, negatives...) tuples."""

    def __init__(
        self,
        net: RetrievalNet,
        loss: dict[str, Any],
        optimizer: dict[str, Any],
        freeze_bn: bool = True,
        seed: int = 0,
        evaluator: Callable[[RetrievalNet], dict[str, float]] | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        # Plain containers only, so that checkpoints load with weights_only=True.
        self.save_hyperparameters(
            {
                LIGHTNING_META_KEY: net.meta,
                "loss": dict(loss),
                "optimizer": dict(optimizer),
                "freeze_bn": freeze_bn,
                "seed": seed,
                "chunk_size": chunk_size,
            }
        )
        self.net = net
        loss_args = {k: v for k, v in loss.items() if k != "name"}
        self.loss_fn = build_loss(loss["name"], **loss_args)
        self.optim_cfg = dict(optimizer)
        self.freeze_bn = freeze_bn
        self.seed = seed
        self.evaluator = evaluator
        # Multi-stage (chunk_size images per forward/backward) drives the backward itself.
        self.chunk_size = int(chunk_size) if chunk_size else None
        self.automatic_optimization = self.chunk_size is None

    def forward(
        self, images: torch.Tensor, image_sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.net(images, image_sizes)

    def train(self, mode: bool = True) -> RetrievalModule:
        super().train(mode)
        if mode and self.freeze_bn:
            freeze_batchnorm(self.net)
        return self

    def tuple_loss(self, batch: TupleBatch) -> torch.Tensor:
        """Loss of a batch of tuples, all their images embedded together (grouped by size)."""
        tuple_length = len(batch[0][0])
        if any(len(images) != tuple_length for images, _ in batch):
            raise ValueError("all tuples of a batch need the same number of negatives")
        images = [img for images, _ in batch for img in images]
        if self.chunk_size is None:
            descriptors = embed_images(self.net, images)
        else:  # validation of a multi-stage run: as little memory as in training
            descriptors = embed_without_grad(
                lambda a, b: embed_images(self.net, images[a:b]), len(images), self.chunk_size
            )
        return self._tuples_loss(descriptors, len(batch))

    def _tuples_loss(self, descriptors: torch.Tensor, n_tuples: int) -> torch.Tensor:
        tuples = _full_precision(descriptors).reshape(n_tuples, -1, descriptors.shape[-1])
        with torch.autocast(tuples.device.type, enabled=False):  # bf16-mixed: the loss in fp32
            return self.loss_fn.tuple_loss(tuples[:, 0], tuples[:, 1], tuples[:, 2:])

    def _embed_labelled(self, batch: LabelBatch, start: int, stop: int) -> torch.Tensor:
        return self.net(batch["images"][start:stop], batch["sizes"][start:stop])

    def label_loss(self, batch: LabelBatch) -> torch.Tensor:
        """Loss of a batch of labelled images; under DDP, of the batches of all ranks together."""
        n = len(batch["labels"])
        if torch.is_grad_enabled():
            descriptors = gather_rows_with_grad(self._embed_labelled(batch, 0, n))
        else:
            local = embed_without_grad(
                lambda a, b: self._embed_labelled(batch, a, b), n, self.chunk_size
            )
            descriptors = gather_rows(local)
        with torch.autocast(descriptors.device.type, enabled=False):  # bf16-mixed: loss in fp32
            return self.loss_fn.label_loss(
                _full_precision(descriptors), gather_rows(batch["labels"])
            )

    def multistage_step(self, batch: TupleBatch | LabelBatch) -> torch.Tensor:
        """Accumulate the batch's gradients chunk by chunk (multistage.py); returns loss."""
        # Hold DDP's gradient all-reduce back until the last chunk.
        no_sync = getattr(self.trainer.strategy, "block_backward_sync", nullcontext)
        common = {"chunk_size": self.chunk_size, "backward": self.manual_backward}
        if isinstance(batch, dict):
            return multistage_backward(
                lambda a, b: self._embed_labelled(batch, a, b),
                len(batch["labels"]),
                self.loss_fn.label_loss,
                batch["labels"],
                gather=True,
                no_sync=no_sync,
                **common,
            )
        images = [img for images, _ in batch for img in images]
        return multistage_backward(
            lambda a, b: embed_images(self.net, images[a:b]),
            len(images),
            lambda descriptors, _: self._tuples_loss(descriptors, len(batch)),
            gather=False,  # tuple losses are per-tuple sums: each rank keeps its own, as before
            no_sync=no_sync,
            **common,
        )

    def _batch_loss(self, batch: TupleBatch | LabelBatch) -> tuple[torch.Tensor, int]:
        """The loss of a tuple or label batch (with a graph when grad is on) and its size."""
        if isinstance(batch, dict):
            return self.label_loss(batch), len(batch["labels"])
        return self.tuple_loss(batch), len(batch)

    def on_train_epoch_start(self) -> None:
        # Lightning never calls train() itself: enter training mode here, BatchNorm frozen.
        self.train()
        # Reseed from (seed, epoch): stochastic layers draw the same numbers in a resumed run.
        pl.seed_everything(self.seed * 1_000_003 + self.current_epoch, workers=True, verbose=False)

    def training_step(self, batch: TupleBatch | LabelBatch, batch_idx: int) -> torch.Tensor:
        if self.automatic_optimization:
            loss, size = self._batch_loss(batch)
        else:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            loss = self.multistage_step(batch)
            optimizer.step()
            size = len(batch["labels"]) if isinstance(batch, dict) else len(batch)
        self._log_step_and_epoch("loss", self._logged_loss(batch, loss), size, prog_bar=True)
        for name, value in self.net.pooling.training_logs().items():  # e.g. GeM's p
            self._log_step_and_epoch(name, value, size)
        return loss

    def _log_step_and_epoch(self, name: str, value: Any, size: int, prog_bar: bool = False) -> None:
        """train/NAME per epoch (every run has it), train/NAME_step every log_every_n_steps."""
        self.log(f"train/{name}_step", value, prog_bar=prog_bar, batch_size=size)
        self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=size)

    def validation_step(self, batch: TupleBatch | LabelBatch, batch_idx: int) -> torch.Tensor:
        loss, size = self._batch_loss(batch)
        self.log("val/loss", self._logged_loss(batch, loss), batch_size=size, sync_dist=True)
        return loss

    @staticmethod
    def _logged_loss(batch: TupleBatch | LabelBatch, loss: torch.Tensor) -> torch.Tensor:
        """The loss as logged: per tuple for tuple batches (cirtorch's mean over tuples; the
        gradient stays that of the summed loss), as it is for labelled batches."""
        if isinstance(batch, dict):
            return loss.detach()
        return loss.detach() / len(batch)

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:  # Lightning steps schedulers only when it optimises
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is None or self.trainer.sanity_checking:
            return
        metrics = self.evaluator(self.net)
        # Evaluators may also report how they ran (e.g. extraction throughput).
        metrics = {**metrics, **getattr(self.evaluator, "last_statistics", {})}
        self.log_dict({f"val/{k}": float(v) for k, v in metrics.items()}, sync_dist=False)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_cfg
        lr, wd = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
        pooling = self.net.pooling
        pooling_ids = {id(p) for p in pooling.parameters()}
        other_params = [p for p in self.net.parameters() if id(p) not in pooling_ids]
        other_params += list(self.loss_fn.parameters())  # e.g. a pml classification head
        # Named groups: the learning-rate monitor logs lr-Adam/net and lr-Adam/pooling.
        # cirtorch steps its scheduler before each epoch: epoch e trains at lr * gamma^(e + 1).
        # Lightning steps after each epoch, so the groups start one step on.
        gamma = math.exp(-float(cfg.get("lr_decay", 0.0)))
        first = lr * gamma
        groups = [{"params": other_params, "lr": first, "weight_decay": wd, "name": "net"}]
        groups += pooling.param_groups(first, float(cfg.get("pooling_lr_mult", 10.0)))
        name = cfg["name"]
        if name not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer.name={name!r}; valid: {', '.join(OPTIMIZERS)}")
        optimizer = OPTIMIZERS[name](groups, first, cfg)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
