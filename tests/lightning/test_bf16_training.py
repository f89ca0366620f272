"""bf16-mixed training (Lightning): convolutions in bf16; loss, GeM p, BatchNorm as in fp32."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from retrieval.lightning.module import RetrievalModule
from retrieval.models.net import build_net


def test_a_bf16_mixed_step_has_a_finite_fp32_loss_and_frozen_batchnorm():
    torch.manual_seed(0)
    # A whitening layer (a Linear: bf16 under autocast) hands the loss bf16 descriptors.
    net = build_net("resnet18", "gem", weights="none", whitening=64)
    net = net.to(memory_format=torch.channels_last)
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    statistics = (bn.running_mean.clone(), bn.running_var.clone())
    weights = net.backbone.features[0].weight.detach().clone()
    p_before = net.pooling.p.detach().clone()
    # Two tuples (query, positive, 2 negatives) of 64 x 80 images, one optimiser step.
    tuples = [([torch.rand(3, 64, 80) for _ in range(4)], torch.tensor([-1, 1, 0, 0]))] * 2
    loader = DataLoader([tuples], batch_size=None, collate_fn=lambda batch: batch)
    module = RetrievalModule(
        net, {"name": "contrastive", "margin": 0.7}, {"name": "adam", "lr": 1e-3}, freeze_bn=True
    )
    seen: dict[str, torch.dtype] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen.setdefault(name, output.dtype)

        return hook

    net.backbone.features[0].register_forward_hook(record("conv"))
    net.pooling.register_forward_hook(record("pooling"))
    module.loss_fn.register_forward_hook(record("loss"))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=loader)
    assert seen == {"conv": torch.bfloat16, "pooling": torch.float32, "loss": torch.float32}
    loss = float(trainer.callback_metrics["train/loss_step"])
    assert math.isfinite(loss) and loss > 0
    assert net.pooling.p.dtype == torch.float32 and not torch.equal(net.pooling.p, p_before)
    assert not torch.equal(net.backbone.features[0].weight, weights)  # it did train, in fp32
    assert net.backbone.features[0].weight.dtype == torch.float32
    torch.testing.assert_close((bn.running_mean, bn.running_var), statistics, rtol=0, atol=0)
