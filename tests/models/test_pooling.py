"""Pooling modules, their registry (1:1 with conf/pooling) and the Pooling protocol."""

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from retrieval.models.backbones import build_backbone
from retrieval.models.functional import (
    PoolingArgumentError,
    gem,
    max_votes,
    spoc,
    sum_response,
)
from retrieval.models.pooling import (
    MAC,
    POOLINGS,
    RMAC,
    CroW,
    GeM,
    NeuralCodes,
    Pooling,
    RGeM,
    RSPoC,
    SoftBoW,
    SPoC,
    build_pooling,
    check_pooling_args,
    pooling_for_backbone,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "pooling"


def _random_map(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Non-negative random map with some exact zeros, like a ReLU output."""
    gen = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(b, c, h, w, generator=gen, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# GeM
# ---------------------------------------------------------------------------------------------


def test_gem_module_rejects_bad_p_naming_the_argument():
    with pytest.raises(PoolingArgumentError, match=r"GeM p must be a number >= 1.*p=0.9") as err:
        GeM(p=0.9)
    assert err.value.argument == "p"
    with pytest.raises(ValueError, match=r"GeM p must be a number >= 1.*p=0"):
        RGeM(p=0)
    with pytest.raises(ValueError, match="per_channel must be the number of channels"):
        GeM(per_channel=0)


def test_gem_module_p_is_parameter_and_gets_gradient():
    x = _random_map(2, 3, 4, 4).float() + 0.1
    pool = GeM(p=3.0)
    assert isinstance(pool.p, nn.Parameter) and pool.p.shape == ()
    pool(x).sum().backward()
    # d/dp of (mean x^p)^(1/p) by central finite differences, in float64
    x64, h = x.double(), 1e-5
    numeric = (gem(x64, p=3.0 + h).sum() - gem(x64, p=3.0 - h).sum()) / (2 * h)
    assert pool.p.grad is not None
    assert pool.p.grad.item() == pytest.approx(numeric.item(), rel=1e-3)
    assert abs(pool.p.grad.item()) > 1e-6


def test_gem_module_per_channel_and_frozen_p():
    pool = GeM(p=2.0, per_channel=3, learn_p=False)
    assert pool.p.shape == (3,) and not pool.p.requires_grad
    x = _random_map(1, 3, 3, 3) + 0.1
    assert torch.allclose(pool(x), gem(x, p=2.0))
    assert pool.out_dim(3) == 3
    with pytest.raises(ValueError, match="per-channel p for 3 channels but the feature map has 4"):
        pool(_random_map(1, 4, 3, 3))
    with pytest.raises(ValueError, match="set per_channel=8"):
        pool.out_dim(8)
    assert "per_channel=3" in repr(pool) and "learn_p=False" in repr(pool)


def test_gem_learned_p_is_clamped_to_one():
    pool = GeM(p=3.0)
    with torch.no_grad():
        pool.p.fill_(0.25)  # an optimiser step could push p below 1
    x = _random_map(2, 3, 4, 4).float() + 0.1
    assert torch.allclose(pool(x), spoc(x), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# CroW and NeuralCodes
# ---------------------------------------------------------------------------------------------


def test_crow_module_checks_its_exponents():
    with pytest.raises(PoolingArgumentError, match="a and b must be > 0") as err:
        CroW(a=0.0)
    assert err.value.argument == "a"


def test_neural_codes_hand_values():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)  # 2 x 2 grid maxima: 5, 7, 13, 15
    head = nn.Linear(4, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, -1.0, 0.0]]))
        head.bias.zero_()
    codes = NeuralCodes(head, grid=(2, 2))
    assert codes(x).tolist() == [[20.0, -6.0]]  # 5 + 15, 7 - 13
    assert codes.out_dim(1) == 2
    with pytest.raises(ValueError, match="head expects 4 inputs but a 3-channel map"):
        codes.out_dim(3)
    assert NeuralCodes(nn.Identity(), grid=(2, 2), out_dim=4).out_dim(1) == 4
    # a Sequential head (fc6-style: Linear, ReLU, Linear, ReLU) gives its sizes by its Linears
    fc = nn.Sequential(nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU())
    seq = NeuralCodes(fc, (2, 2))
    assert seq.out_dim(3) == 6
    with pytest.raises(ValueError, match="head expects 12 inputs but a 2-channel map"):
        seq.out_dim(2)
    with pytest.raises(ValueError, match="pass out_dim="):
        NeuralCodes(nn.Identity(), grid=(2, 2))
    with pytest.raises(ValueError, match="grid must be two ints"):
        NeuralCodes(head, grid=(2,))


# ---------------------------------------------------------------------------------------------
# masks: padded batches give the same descriptors as each image alone
# ---------------------------------------------------------------------------------------------


def _all_poolings() -> list[nn.Module]:
    head = nn.Linear(3 * 2 * 3, 5).double()
    return [
        MAC(),
        SPoC(),
        GeM(p=3.0).double(),
        GeM(p=2.0, per_channel=3).double(),
        RMAC(levels=3),
        RGeM(p=3.0).double(),
        RSPoC(),
        CroW(),
        NeuralCodes(head, grid=(2, 3)),
    ]


@pytest.mark.parametrize("pool", _all_poolings(), ids=lambda m: type(m).__name__)
def test_padded_batch_with_mask_equals_one_by_one(pool):
    sizes = [(5, 7), (7, 4), (3, 3), (7, 7)]
    maps = [_random_map(1, 3, h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    batch = torch.full((4, 3, 7, 7), 50.0, dtype=torch.float64)  # padding far from the data
    mask = torch.zeros(4, 7, 7, dtype=torch.bool)
    for i, ((h, w), m) in enumerate(zip(sizes, maps, strict=True)):
        batch[i, :, :h, :w] = m[0]
        mask[i, :h, :w] = True
    with torch.no_grad():
        alone = torch.cat([pool(m) for m in maps])
        assert torch.allclose(pool(batch, mask=mask), alone, atol=1e-5)
        # the padding does change the result without the mask, so the check above has teeth
        assert not torch.allclose(pool(batch), alone, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_build_pooling_registry():
    assert set(POOLINGS) == {
        "mac",
        "spoc",
        "gem",
        "rmac",
        "rgem",
        "rspoc",
        "crow",
        "neural_codes",
        "bow",
    }
    gem_pool = build_pooling("gem", p=4.0, learn_p=False)
    assert isinstance(gem_pool, GeM) and gem_pool.p.item() == 4.0
    assert isinstance(build_pooling("rmac", levels=2), RMAC)
    codes = build_pooling("neural_codes", head=nn.Linear(8, 3), grid=(2, 2))
    assert isinstance(codes, NeuralCodes) and codes.out_dim(2) == 3
    with pytest.raises(ValueError, match="unknown pooling 'max'; valid names: mac, spoc, gem"):
        build_pooling("max")
    with pytest.raises(ValueError, match=r"pooling 'mac' cannot take arguments \['p'\]"):
        build_pooling("mac", p=3.0)


def test_modules_out_dim_and_repr():
    for pool in (MAC(), SPoC(), GeM(), RMAC(), RGeM(), RSPoC(), CroW()):
        assert pool.out_dim(512) == 512
    assert "p=3.0000" in repr(GeM()) and "levels=3" in repr(RGeM())
    assert "a=2.0, b=2.0" in repr(CroW())


def test_registry_is_one_to_one_with_the_config_group():
    names = {yaml.safe_load(path.read_text())["name"] for path in CONF.glob("*.yaml")}
    assert names == set(POOLINGS)
    for path in sorted(CONF.glob("*.yaml")):
        option = yaml.safe_load(path.read_text())
        args = {k: (512 if v == "auto" else v) for k, v in (option.get("args") or {}).items()}
        check_pooling_args(option["name"], args)  # the shipped values pass their own checks


@pytest.mark.parametrize(
    ("name", "args", "argument"),
    [
        ("gem", {"p": 0.5, "learn_p": True}, "p"),
        ("gem", {"p": 3.0, "per_channel": 0}, "per_channel"),
        ("rgem", {"p": 3.0, "levels": 0}, "levels"),
        ("rmac", {"levels": 0}, "levels"),
        ("crow", {"a": 2.0, "b": 0.0}, "b"),
        ("bow", {"alpha": 0.0, "num_words": None}, "alpha"),
    ],
)
def test_check_pooling_args_names_the_bad_argument(name, args, argument):
    with pytest.raises(PoolingArgumentError) as err:
        check_pooling_args(name, args)
    assert err.value.argument == argument


# ---------------------------------------------------------------------------------------------
# the Pooling protocol: what the rest of the package asks of a pooling
# ---------------------------------------------------------------------------------------------


def test_multiscale_exponent_is_gem_p_only():
    gem_pool, per_channel = GeM(p=2.5), GeM(p=2.0, per_channel=4)
    with torch.no_grad():
        per_channel.p.copy_(torch.tensor([0.5, 2.0, 3.0, 4.0]))
    assert gem_pool.multiscale_exponent() == pytest.approx(2.5)
    assert per_channel.multiscale_exponent() == 1.0  # cirtorch's GeMmp: msp = 1, not mean p
    learned_below_one = GeM(p=1.5)
    with torch.no_grad():
        learned_below_one.p.fill_(0.5)
    assert learned_below_one.multiscale_exponent() == 1.0  # 0.5 counts as 1, as GeM uses it
    # cirtorch averages scales with p for plain GeM only: R-GeM and the rest take the plain mean
    others = (MAC(), SPoC(), RMAC(), RGeM(p=3.0), RSPoC(), CroW(), SoftBoW(num_words=2, in_dim=3))
    assert all(pool.multiscale_exponent() == 1.0 for pool in others)


def test_param_groups_give_learnable_weights_a_faster_rate_without_weight_decay():
    pool = GeM(p=3.0)
    (group,) = pool.param_groups(lr=1e-4, lr_mult=10.0)
    assert group["params"] == [pool.p] and group["name"] == "pooling"
    assert group["lr"] == pytest.approx(1e-3) and group["weight_decay"] == 0.0
    assert GeM(learn_p=False).param_groups(1e-4, 10.0) == []
    assert MAC().param_groups(1e-4, 10.0) == []
    bow = SoftBoW(num_words=2, in_dim=3)
    assert bow.param_groups(1e-4, 10.0)[0]["params"] == [bow.codebook]


def test_training_logs_report_the_learned_p():
    pool = GeM(p=2.0, per_channel=2)
    with torch.no_grad():
        pool.p.copy_(torch.tensor([2.0, 4.0]))
    assert pool.training_logs()["gem_p"].item() == pytest.approx(3.0)
    assert set(RGeM().training_logs()) == {"gem_p"}
    assert MAC().training_logs() == {} and RMAC().training_logs() == {}


def test_activation_follows_what_each_pooling_pools():
    x = _random_map(1, 3, 4, 5)[0]
    for pool in (MAC(), RMAC()):
        assert torch.equal(pool.activation(x), max_votes(x))
    for pool in (SPoC(), RSPoC(), CroW(), SoftBoW(num_words=2, in_dim=3)):
        assert torch.equal(pool.activation(x), sum_response(x))
    for pool in (GeM(p=2.0), RGeM(p=2.0)):
        assert torch.allclose(pool.activation(x), x.pow(2).sum(dim=0))


def test_pooling_for_backbone_fills_what_the_backbone_decides():
    trunk = build_backbone("resnet18", weights="none")
    bow = pooling_for_backbone("bow", trunk, {"num_words": 4, "in_dim": None})
    assert bow.codebook.shape == (4, 512)
    assert bow.rebuild_args({})["in_dim"] == 512 and bow.rebuild_args({})["vocabulary"] is None
    assert pooling_for_backbone("gem", trunk, {"p": 2.0}).rebuild_args({"p": 2.0}) == {"p": 2.0}
    with pytest.raises(ValueError, match=r"pooling 'neural_codes' cannot take arguments \['p'\]"):
        pooling_for_backbone("neural_codes", trunk, {"p": 3.0})


def test_a_new_pooling_is_one_class_and_one_registry_entry(monkeypatch):
    from retrieval.models.net import build_net

    class Top2(Pooling):
        """Mean of the two largest activations of each channel."""

        def forward(self, x, mask=None):
            return x.flatten(2).topk(2, dim=2).values.mean(dim=2)

    monkeypatch.setitem(POOLINGS, "top2", Top2)
    net = build_net("resnet18", "top2").eval()
    assert net.meta["pooling"] == "top2" and net(torch.rand(2, 3, 64, 64)).shape == (2, 512)
    assert net.multiscale_exponent() == 1.0 and net.pooling.param_groups(1.0, 10.0) == []
