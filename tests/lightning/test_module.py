"""RetrievalModule: frozen BatchNorm, parameter groups, batched tuple loss."""

import math

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
    assert math.isclose(pooling_group["lr"], 1e-3) and pooling_group["weight_decay"] == 0.0
    assert math.isclose(backbone_group["lr"], 1e-4) and backbone_group["weight_decay"] == 1e-6
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
