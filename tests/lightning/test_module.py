"""RetrievalModule: frozen BatchNorm, parameter groups, batched tuple loss."""

import math

import pytorch_lightning as pl
import torch

from retrieval.lightning.module import RetrievalModule
from retrieval.losses import contrastive_loss
from retrieval.models.net import build_net

OPTIM = {
    "name": "adam",
    "lr": 1e-4,
    "weight_decay": 1e-6,
    "pooling_lr_mult": 10.0,
    "lr_decay": 0.01,
}


def make_module(**kwargs):
    torch.manual_seed(0)
    net = build_net("resnet18", "gem")
    return RetrievalModule(net, {"name": "contrastive", "margin": 0.7}, OPTIM, **kwargs)


def test_batchnorm_statistics_stay_frozen_in_training_mode():
    module = make_module().train()
    bn = module.net.backbone.features[1]
    before = bn.running_mean.clone()
    module.net(torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(bn.running_mean, before)
    assert not bn.training and module.net.pooling.training


def test_batchnorm_updates_when_not_frozen():
    module = make_module(freeze_bn=False).train()
    bn = module.net.backbone.features[1]
    before = bn.running_mean.clone()
    module.net(torch.rand(2, 3, 64, 64))
    assert not torch.allclose(bn.running_mean, before)


def test_pooling_parameters_get_ten_times_the_rate_and_no_weight_decay():
    module = make_module()
    config = module.configure_optimizers()
    backbone_group, pooling_group = config["optimizer"].param_groups
    assert pooling_group["params"] == [module.net.pooling.p]
    gamma = math.exp(-0.01)  # the first epoch already trains one decay step on (cirtorch)
    assert math.isclose(pooling_group["lr"], 1e-3 * gamma) and pooling_group["weight_decay"] == 0.0
    assert math.isclose(backbone_group["lr"], 1e-4 * gamma)
    assert backbone_group["weight_decay"] == 1e-6
    assert math.isclose(config["lr_scheduler"]["scheduler"].gamma, math.exp(-0.01))


def test_tuple_loss_equals_sum_of_per_tuple_losses():
    module = make_module().train()
    torch.manual_seed(1)
    sizes = [(48, 64), (64, 48), (48, 48), (64, 64)]
    batch = [
        ([torch.rand(3, *sizes[(t + i) % 4]) for i in range(4)], torch.tensor([-1, 1, 0, 0]))
        for t in range(3)
    ]
    loss = module.tuple_loss(batch)
    expected = 0.0
    for images, _ in batch:
        d = torch.cat([module.net(img[None]) for img in images])
        expected = expected + contrastive_loss(d[:1], d[1:2], d[None, 2:], margin=0.7)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def _tuple_batch(seed: int, n_tuples: int = 3) -> list:
    torch.manual_seed(seed)
    target = torch.tensor([-1, 1, 0, 0])
    return [([torch.rand(3, 40, 48) for _ in range(4)], target) for _ in range(n_tuples)]


class _Record(pl.Callback):
    """The learning rates each epoch trains with and the loss logged at each step."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.logged: list[float] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.logged.append(float(trainer.callback_metrics["train/loss_step"]))


def test_lr_steps_before_each_epoch_and_the_loss_is_logged_per_tuple():
    """cirtorch's train.py calls scheduler.step() before each epoch (epoch e at lr * gamma^(e+1))
    and logs the mean loss of a tuple; the gradient is that of the batch's summed loss."""
    module = make_module()
    batch = _tuple_batch(seed=2)
    module.train()
    with torch.no_grad():
        summed = float(module.tuple_loss(batch))
    record = _Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    loader = torch.utils.data.DataLoader([batch], batch_size=None, collate_fn=lambda b: b)
    trainer.fit(module, train_dataloaders=loader)
    gamma = math.exp(-0.01)
    for epoch, (net_lr, pooling_lr) in enumerate(record.lrs):
        assert math.isclose(net_lr, 1e-4 * gamma ** (epoch + 1), rel_tol=1e-9)
        assert math.isclose(pooling_lr, 1e-3 * gamma ** (epoch + 1), rel_tol=1e-9)
    assert len(record.lrs) == 3
    assert math.isclose(record.logged[0], summed / 3, rel_tol=1e-4)  # 3 tuples in the batch
