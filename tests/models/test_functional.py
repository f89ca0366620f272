"""The pure poolings of retrieval.models.functional against hand computations on tiny maps."""

import math

import numpy as np
import pytest
import torch

from retrieval.models.functional import (
    PoolingArgumentError,
    crow,
    gem,
    grid_max,
    mac,
    max_votes,
    power_response,
    rgem,
    rmac,
    rmac_regions,
    rspoc,
    spoc,
    sum_response,
)

# Two channels on a 2 x 2 map, values chosen so every pooling is easy to do by hand.
HAND = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0]],
        [[0.0, 0.0], [5.0, 1.0]],
    ]
).unsqueeze(0)


def _random_map(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Non-negative random map with some exact zeros, like a ReLU output."""
    gen = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(b, c, h, w, generator=gen, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# MAC, SPoC, GeM
# ---------------------------------------------------------------------------------------------


def test_mac_and_spoc_hand_values():
    assert torch.equal(mac(HAND), torch.tensor([[4.0, 5.0]]))
    # (1 + 2 + 3 + 4) / 4 = 2.5 and (0 + 0 + 5 + 1) / 4 = 1.5
    assert torch.allclose(spoc(HAND), torch.tensor([[2.5, 1.5]]))


def test_gem_hand_value():
    # p = 2 on channel 0: sqrt((1 + 4 + 9 + 16) / 4) = sqrt(7.5)
    assert gem(HAND, p=2.0)[0, 0].item() == pytest.approx(math.sqrt(7.5), rel=1e-6)


def test_gem_p1_equals_spoc():
    x = _random_map(3, 4, 5, 6) + 0.1  # strictly above eps so the clamp plays no part
    assert torch.allclose(gem(x, p=1.0), spoc(x), atol=1e-12)


def test_gem_grows_with_p_towards_mac():
    # One non-zero cell out of four, zeros clamped to eps: GeM = ((3 eps^p + 4^p) / 4)^(1/p),
    # about 4 * 4^(-1/p) -> 4 = MAC.
    x = torch.tensor([[[[0.0, 0.0], [0.0, 4.0]]]], dtype=torch.float64)
    eps = 1e-6
    for p in (1.0, 3.0, 100.0, 300.0):
        expected = ((3 * eps**p + 4**p) / 4) ** (1 / p)
        assert gem(x, p=p, eps=eps).item() == pytest.approx(expected, rel=1e-9)
        assert expected == pytest.approx(4 * 4 ** (-1 / p), rel=1e-6)
    assert gem(x, p=300.0).item() == pytest.approx(mac(x).item(), rel=5e-3)
    y = _random_map(2, 3, 4, 4) + 0.01
    values = [gem(y, p=p) for p in (1.0, 2.0, 8.0, 64.0)]
    for low, high in zip(values, values[1:], strict=False):
        assert torch.all(low <= high + 1e-12)
    assert torch.allclose(gem(y, p=500.0), mac(y), rtol=1e-2)


def test_gem_per_channel_p_against_loop():
    x = _random_map(2, 3, 4, 5) + 0.05
    p = torch.tensor([1.0, 2.5, 6.0], dtype=torch.float64)
    got = gem(x, p=p)
    for n in range(2):
        for k in range(3):
            cells = x[n, k].flatten().tolist()
            expected = (sum(v ** p[k].item() for v in cells) / len(cells)) ** (1 / p[k].item())
            assert got[n, k].item() == pytest.approx(expected, rel=1e-10)


def test_gem_rejects_bad_p():
    with pytest.raises(PoolingArgumentError, match=r"p must be a number >= 1.*p=0.5"):
        gem(HAND, p=0.5)
    with pytest.raises(ValueError, match=r"one p per channel \(shape \(2,\).*shape \(3,\)"):
        gem(HAND, p=torch.ones(3))


# ---------------------------------------------------------------------------------------------
# R-MAC grid and regional poolings
# ---------------------------------------------------------------------------------------------


def test_rmac_regions_square_7x7():
    # Square map: no extra regions. Level l: side floor(2 * 7 / (l + 1)), l starts per axis
    # spread over [0, 7 - side] with step (7 - side) / (l - 1), floored:
    # l=1: side 7, start 0
    # l=2: side floor(14 / 3) = 4, step 3 -> starts 0, 3
    # l=3: side floor(14 / 4) = 3, step (7 - 3) / 2 = 2 -> starts 0, 2, 4
    expected = [(0, 0, 7, 7)]
    expected += [(y, x, 4, 4) for y in (0, 3) for x in (0, 3)]
    expected += [(y, x, 3, 3) for y in (0, 2, 4) for x in (0, 2, 4)]
    assert rmac_regions(7, 7) == expected


def test_rmac_regions_10x20():
    # h=10, w=20: short 10, long - short = 10. With k extra regions along w the step is 10 / k and
    # the overlap 1 - (10 / k) / 10 = 1 - 1/k: k=1..6 -> 0, .5, .667, .75, .8, .833; closest to
    # 0.4 is k=2, so level l has l rows and l + 2 columns of regions.
    # l=1: side 10; x step (20 - 10) / 2 = 5 -> 0, 5, 10; y: 0
    # l=2: side floor(20 / 3) = 6; x step (20 - 6) / 3 = 4.67 -> 0, 4, 9, 14; y step 4 -> 0, 4
    # l=3: side 5; x step (20 - 5) / 4 = 3.75 -> 0, 3, 7, 11, 15; y step 2.5 -> 0, 2, 5
    expected = [(0, x, 10, 10) for x in (0, 5, 10)]
    expected += [(y, x, 6, 6) for y in (0, 4) for x in (0, 4, 9, 14)]
    expected += [(y, x, 5, 5) for y in (0, 2, 5) for x in (0, 3, 7, 11, 15)]
    assert rmac_regions(10, 20) == expected


def test_rmac_regions_20x10_is_the_transpose():
    # Same grid with the roles of the axes swapped (rows still vary slowest).
    expected = [(0, x, 10, 10) for x in (0, 5, 10)]
    expected += [(y, x, 6, 6) for y in (0, 4) for x in (0, 4, 9, 14)]
    expected += [(y, x, 5, 5) for y in (0, 2, 5) for x in (0, 3, 7, 11, 15)]
    transposed = sorted((x, y, s, s) for y, x, s, _ in expected)
    assert sorted(rmac_regions(20, 10)) == transposed
    assert rmac_regions(20, 10)[:3] == [(0, 0, 10, 10), (5, 0, 10, 10), (10, 0, 10, 10)]


def test_rmac_regions_30x40():
    # short 30, long - short = 10: overlap 1 - 10 / (30 k) = .667, .833, ... -> k = 1.
    # l=1: side 30; x: 0, 10
    # l=2: side 20; x step (40 - 20) / 2 = 10 -> 0, 10, 20; y step 10 -> 0, 10
    # l=3: side 15; x step 25 / 3 = 8.33 -> 0, 8, 16, 25; y step 7.5 -> 0, 7, 15
    expected = [(0, x, 30, 30) for x in (0, 10)]
    expected += [(y, x, 20, 20) for y in (0, 10) for x in (0, 10, 20)]
    expected += [(y, x, 15, 15) for y in (0, 7, 15) for x in (0, 8, 16, 25)]
    assert rmac_regions(30, 40) == expected


def test_rmac_regions_follow_reference_float32_rounding():
    # 2 x 32, two levels. Overlaps 1 - 30 / (2 k) are all negative, the largest (k = 6) wins:
    # l=1: side 2, 7 starts 0, 5, ..., 30. l=2: side 1, 8 starts along w with step 31 / 7.
    # Exactly, the last start is 7 * 31 / 7 = 31, but cirtorch works in float32, where
    # 7 * float32(31 / 7) < 31, so its last start is 30, and so is ours.
    assert np.float32(31 / 7) * np.float32(7) < 31
    regions = rmac_regions(2, 32, levels=2)
    assert regions[:7] == [(0, x, 2, 2) for x in range(0, 31, 5)]
    assert [x for y, x, _, _ in regions[7:] if y == 0] == [0, 4, 8, 13, 17, 22, 26, 30]
    assert len(regions) == 7 + 16


def test_rmac_regions_skip_empty_levels_and_validate():
    # 1 x 1: only level 1 (side 1); deeper levels would have side floor(2 / 3) = 0.
    assert rmac_regions(1, 1, levels=3) == [(0, 0, 1, 1)]
    with pytest.raises(ValueError, match="levels must be an int >= 1, got 0"):
        rmac_regions(5, 5, levels=0)
    with pytest.raises(ValueError, match="h must be an int >= 1"):
        rmac_regions(0, 5)


def _regional_by_loop(x, pool, regions, eps=1e-6):
    """Sum of L2-normalised pool() over the whole map and the given regions, sample by sample."""
    out = []
    for sample in x:
        h, w = sample.shape[-2:]
        total = torch.zeros(sample.shape[0], dtype=x.dtype)
        for y0, x0, rh, rw in [(0, 0, h, w), *regions]:
            v = pool(sample[:, y0 : y0 + rh, x0 : x0 + rw].reshape(sample.shape[0], -1))
            total += v / (v.norm() + eps)
        out.append(total)
    return torch.stack(out)


def test_rmac_against_explicit_loop_on_hand_listed_regions():
    x = _random_map(2, 3, 7, 7)
    regions = [(0, 0, 7, 7)]
    regions += [(y, x0, 4, 4) for y in (0, 3) for x0 in (0, 3)]
    regions += [(y, x0, 3, 3) for y in (0, 2, 4) for x0 in (0, 2, 4)]
    expected = _regional_by_loop(x, lambda v: v.max(dim=1).values, regions)
    assert torch.allclose(rmac(x), expected, atol=1e-12)


def test_rspoc_and_rgem_against_explicit_loop():
    x = _random_map(2, 4, 6, 9, seed=3) + 0.01
    regions = rmac_regions(6, 9, levels=2)
    spoc_loop = _regional_by_loop(x, lambda v: v.mean(dim=1), regions)
    assert torch.allclose(rspoc(x, levels=2), spoc_loop, atol=1e-12)
    gem_loop = _regional_by_loop(x, lambda v: v.pow(4.0).mean(dim=1).pow(0.25), regions)
    assert torch.allclose(rgem(x, p=4.0, levels=2), gem_loop, atol=1e-12)


def test_rmac_single_level_square_is_twice_normalised_mac():
    # On a square map level 1 is the whole map, so R-MAC(levels=1) = 2 * MAC / ||MAC||.
    x = _random_map(2, 5, 4, 4)
    m = mac(x)
    assert torch.allclose(rmac(x, levels=1, eps=0.0), 2 * m / m.norm(dim=1, keepdim=True))


# ---------------------------------------------------------------------------------------------
# CroW, grid max
# ---------------------------------------------------------------------------------------------


def test_crow_hand_weights():
    # channel 0 = [[1, 0], [0, 3]], channel 1 = [[2, 0], [0, 0]]
    x = torch.tensor([[[[1.0, 0.0], [0.0, 3.0]], [[2.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
    # Z = [[3, 0], [0, 3]], ||Z||_2 = sqrt(18); Z / ||Z|| = 1/sqrt(2) on the diagonal;
    # S = (1/sqrt(2))^(1/2) = 2^(-1/4) there (the zero cells hold x = 0 and add nothing).
    s = 2 ** (-0.25)
    # Q = (2/4, 1/4), sum 0.75: Omega = (log(0.75 / 0.5), log(0.75 / 0.25)) = (log 1.5, log 3)
    expected = [math.log(1.5) * s * (1 + 3), math.log(3.0) * s * 2]
    got = crow(x, a=2.0, b=2.0)
    assert got[0].tolist() == pytest.approx(expected, rel=1e-5)
    # a = b = 1: S = Z / sum(Z) = 1/2 on the diagonal
    got = crow(x, a=1.0, b=1.0)
    assert got[0].tolist() == pytest.approx([math.log(1.5) * 2.0, math.log(3.0) * 1.0], rel=1e-5)


def test_crow_zero_map_gives_zero_descriptor_and_finite_gradient():
    x = torch.zeros(1, 3, 2, 2, requires_grad=True)
    out = crow(x)
    assert torch.equal(out, torch.zeros(1, 3))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(PoolingArgumentError, match="a and b must be > 0"):
        crow(x, b=-1.0)


def test_grid_max_hand_values():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # 2 x 2 blocks of [[0..3], [4..7], [8..11], [12..15]]: maxima 5, 7, 13, 15
    assert grid_max(x, (2, 2)).tolist() == [[5.0, 7.0, 13.0, 15.0]]


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [mac, spoc, gem, crow], ids=lambda f: f.__name__)
def test_global_poolings_accept_any_mask(fn):
    # These poolings ignore where cells are, so a scattered mask must equal pooling the
    # gathered valid cells laid out as a 1 x n map.
    x = _random_map(2, 3, 4, 5, seed=7)
    mask = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(1)) > 0.5
    got = fn(x, mask=mask)
    for i in range(2):
        cells = x[i][:, mask[i]].unsqueeze(0).unsqueeze(2)
        assert torch.allclose(got[i], fn(cells)[0], atol=1e-10)


def test_regional_pooling_rejects_non_rectangular_mask():
    x = _random_map(2, 3, 4, 4)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[1, 0, 0] = False  # hole at the top-left of sample 1
    with pytest.raises(ValueError, match=r"top-left rectangle .* sample\(s\) \[1\]"):
        rmac(x, mask=mask)


def test_mask_validation_messages():
    x = _random_map(2, 3, 4, 4)
    with pytest.raises(ValueError, match="must be a bool tensor .* mask.bool()"):
        mac(x, mask=torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match=r"shape B x h x w = \(2, 4, 4\)"):
        spoc(x, mask=torch.ones(2, 4, 5, dtype=torch.bool))
    empty = torch.ones(2, 4, 4, dtype=torch.bool)
    empty[0] = False
    with pytest.raises(ValueError, match=r"no valid position for sample\(s\) \[0\]"):
        gem(x, mask=empty)
    with pytest.raises(ValueError, match="B x C x h x w"):
        mac(x[0])


# ---------------------------------------------------------------------------------------------
# activation responses
# ---------------------------------------------------------------------------------------------


def test_activation_responses_by_hand():
    x = HAND[0].double()  # channel maxima: 4 at (1, 1), 5 at (1, 0)
    assert sum_response(x).tolist() == [[1.0, 2.0], [8.0, 5.0]]
    assert max_votes(x).tolist() == [[0.0, 0.0], [5.0, 4.0]]
    assert power_response(x, 2.0).tolist() == [[1.0, 4.0], [34.0, 17.0]]
    # p is clamped to >= 1 as GeM uses it; one p per channel weighs each channel
    assert torch.equal(power_response(x, 0.5), sum_response(x))
    per_channel = power_response(x, torch.tensor([1.0, 2.0]))
    assert per_channel.tolist() == [[1.0, 2.0], [28.0, 5.0]]
