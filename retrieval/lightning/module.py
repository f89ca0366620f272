"""RetrievalModule: the training glue around RetrievalNet, a tuple loss and the optimiser."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from retrieval.losses import build_loss
from retrieval.models.net import RetrievalNet, embed_images

TupleBatch = list[tuple[list[torch.Tensor], torch.Tensor]]


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode: running statistics are used, not updated."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


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
    ) -> None:
        super().__init__()
        # Plain containers only, so that checkpoints load with weights_only=True.
        self.save_hyperparameters(
            {
                "net_meta": net.meta,
                "loss": dict(loss),
                "optimizer": dict(optimizer),
                "freeze_bn": freeze_bn,
                "seed": seed,
            }
        )
        self.net = net
        loss_args = {k: v for k, v in loss.items() if k != "name"}
        self.loss_fn = build_loss(loss["name"], **loss_args)
        self.optim_cfg = dict(optimizer)
        self.freeze_bn = freeze_bn
        self.seed = seed
        self.evaluator = evaluator

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
        descriptors = embed_images(self.net, [img for images, _ in batch for img in images])
        tuples = descriptors.reshape(len(batch), tuple_length, -1)
        return self.loss_fn(tuples[:, 0], tuples[:, 1], tuples[:, 2:])

    def on_train_epoch_start(self) -> None:
        # Lightning never calls train() itself: enter training mode here, BatchNorm frozen.
        self.train()
        # Reseed from (seed, epoch): stochastic layers draw the same numbers in a resumed run.
        pl.seed_everything(self.seed * 1_000_003 + self.current_epoch, workers=True, verbose=False)

    def training_step(self, batch: TupleBatch, batch_idx: int) -> torch.Tensor:
        loss = self.tuple_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        p = getattr(self.net.pooling, "p", None)
        if isinstance(p, torch.Tensor):
            self.log("train/gem_p", p.detach().mean(), batch_size=len(batch))
        return loss

    def validation_step(self, batch: TupleBatch, batch_idx: int) -> torch.Tensor:
        loss = self.tuple_loss(batch)
        self.log("val/loss", loss, batch_size=len(batch), sync_dist=True)
        return loss

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is None or self.trainer.sanity_checking:
            return
        metrics = self.evaluator(self.net)
        self.log_dict({f"val/{k}": float(v) for k, v in metrics.items()}, sync_dist=False)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_cfg
        lr, wd = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
        pooling_params = list(self.net.pooling.parameters())
        pooling_ids = {id(p) for p in pooling_params}
        other_params = [p for p in self.net.parameters() if id(p) not in pooling_ids]
        groups = [{"params": other_params, "lr": lr, "weight_decay": wd}]
        learnable_pooling = [p for p in pooling_params if p.requires_grad]
        if learnable_pooling:  # GeM p: faster and without weight decay, as cirtorch
            groups.append(
                {
                    "params": learnable_pooling,
                    "lr": lr * float(cfg.get("pooling_lr_mult", 10.0)),
                    "weight_decay": 0.0,
                }
            )
        name = cfg["name"]
        if name == "adam":
            optimizer = torch.optim.Adam(groups, lr=lr)
        elif name == "sgd":
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)))
        else:
            raise ValueError(f"Unknown optimizer.name={name!r}; valid: adam, sgd")
        gamma = math.exp(-float(cfg.get("lr_decay", 0.0)))
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
