"""Contrastive and triplet losses against hand-computed values on 2-D unit vectors."""

import math

import pytest
import torch

from retrieval.losses import (
    LOSSES,
    ContrastiveLoss,
    TripletLoss,
    build_loss,
    contrastive_loss,
    nonzero_loss_fraction,
    triplet_loss,
)

# For unit vectors at angle t, the squared distance is 2 - 2 cos t:
#   t = 0   -> d = 0        cos t = 7/8 -> d^2 = 1/4, d = 1/2
#   t = 60  -> d = 1        t = 90      -> d^2 = 2,   d = sqrt(2)
#   t = 180 -> d = 2
S15 = math.sqrt(15) / 8


def toy_tuples() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two tuples (T=2, K=2, D=2) of unit vectors with the distances listed above."""
    # Tuple A: q = (1, 0); p at 60 deg (d=1); n1 with cos 7/8 (d=1/2); n2 at 90 deg (d=sqrt 2).
    # Tuple B: q = (0, 1); p = q (d=0); n1 = -q (d=2); n2 with cos 7/8 to q (d=1/2).
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    positive = torch.tensor([[0.5, math.sqrt(3) / 2], [0.0, 1.0]], dtype=torch.float64)
    negatives = torch.tensor(
        [[[7 / 8, S15], [0.0, 1.0]], [[0.0, -1.0], [-S15, 7 / 8]]], dtype=torch.float64
    )
    return query, positive, negatives


def test_contrastive_squared_matches_hand_values():
    q, p, n = toy_tuples()
    # margin 0.7. A: 0.5*1^2 + 0.5*(0.7-0.5)^2 + 0 = 0.5 + 0.02 = 0.52
    #             B: 0.5*0^2 + 0 (d=2) + 0.5*(0.7-0.5)^2 = 0.02
    per_tuple = contrastive_loss(q, p, n, reduction="none")
    torch.testing.assert_close(per_tuple, torch.tensor([0.52, 0.02], dtype=torch.float64))
    assert contrastive_loss(q, p, n).item() == pytest.approx(0.54)
    assert contrastive_loss(q, p, n, reduction="mean").item() == pytest.approx(0.27)


def test_contrastive_margin_changes_active_negatives():
    q, p, n = toy_tuples()
    # margin 1.5. A: 0.5*1 + 0.5*(1.5-0.5)^2 + 0.5*(1.5-sqrt2)^2 = 0.5 + 0.5 + 0.5*0.0857864^2
    #             B: 0 + 0 (d=2 > 1.5) + 0.5*(1.5-0.5)^2 = 0.5
    expected_a = 1.0 + 0.5 * (1.5 - math.sqrt(2)) ** 2
    per_tuple = contrastive_loss(q, p, n, margin=1.5, reduction="none")
    torch.testing.assert_close(per_tuple, torch.tensor([expected_a, 0.5], dtype=torch.float64))


def test_contrastive_unsquared_matches_hand_values():
    q, p, n = toy_tuples()
    # A: d(q,p)=1 + (0.7-0.5) + 0 = 1.2;  B: 0 + 0 + (0.7-0.5) = 0.2
    per_tuple = contrastive_loss(q, p, n, reduction="none", squared=False)
    torch.testing.assert_close(per_tuple, torch.tensor([1.2, 0.2], dtype=torch.float64))
    assert contrastive_loss(q, p, n, reduction="mean", squared=False).item() == pytest.approx(0.7)


def test_triplet_squared_matches_hand_values():
    q, p, n = toy_tuples()
    # margin 0.1, squared distances. A: max(0, 0.1+1-0.25)=0.85, max(0, 0.1+1-2)=0 -> 0.85
    #                                 B: max(0, 0.1+0-4)=0, max(0, 0.1+0-0.25)=0 -> 0
    per_tuple = triplet_loss(q, p, n, reduction="none")
    torch.testing.assert_close(per_tuple, torch.tensor([0.85, 0.0], dtype=torch.float64))
    assert triplet_loss(q, p, n).item() == pytest.approx(0.85)
    assert triplet_loss(q, p, n, reduction="mean").item() == pytest.approx(0.425)


def test_triplet_unsquared_matches_hand_values():
    q, p, n = toy_tuples()
    # margin 0.1, plain distances. A: max(0, 0.1+1-0.5)=0.6, max(0, 1.1-sqrt2)=0 -> 0.6
    #                              B: max(0, 0.1-2)=0, max(0, 0.1-0.5)=0 -> 0
    per_tuple = triplet_loss(q, p, n, reduction="none", squared=False)
    torch.testing.assert_close(per_tuple, torch.tensor([0.6, 0.0], dtype=torch.float64))
    # Margin 0.7 activates more: A: (0.7+1-0.5) + (1.7-sqrt2) = 1.2 + 0.2858;  B: 0.7-0.5 = 0.2
    per_tuple = triplet_loss(q, p, n, margin=0.7, reduction="none", squared=False)
    expected = torch.tensor([1.2 + 1.7 - math.sqrt(2), 0.2], dtype=torch.float64)
    torch.testing.assert_close(per_tuple, expected)


def test_reduction_none_shape_and_nonzero_fraction():
    q, p, n = toy_tuples()
    assert contrastive_loss(q, p, n, reduction="none").shape == (2,)
    assert triplet_loss(q, p, n, reduction="none").shape == (2,)
    # Triplet: tuple A is active, tuple B is not.
    assert nonzero_loss_fraction(triplet_loss(q, p, n, reduction="none")) == 0.5
    assert nonzero_loss_fraction(torch.tensor([0.0, 0.0, 0.3, 1.0])) == 0.5
    with pytest.raises(ValueError, match='reduction="none"'):
        nonzero_loss_fraction(torch.tensor(1.0))


def test_gradients_match_analytic_values():
    q, p, n = toy_tuples()
    p = p.clone().requires_grad_(True)
    contrastive_loss(q, p, n).backward()
    # Only 0.5 ||q - p||^2 depends on p: its gradient is p - q.
    torch.testing.assert_close(p.grad, p.detach() - q)

    p.grad = None
    triplet_loss(q, p, n).backward()
    # Squared triplet: active only for tuple A (one negative), gradient 2 (p - q); B inactive.
    expected = torch.stack([2 * (p.detach()[0] - q[0]), torch.zeros(2, dtype=torch.float64)])
    torch.testing.assert_close(p.grad, expected)


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("loss_fn", [contrastive_loss, triplet_loss])
def test_gradients_are_finite_when_points_coincide(loss_fn, squared):
    # Tuple B has p == q; the unsquared forms take a square root there.
    q, p, n = toy_tuples()
    q = q.clone().requires_grad_(True)
    n = n.clone().requires_grad_(True)
    loss_fn(q, p, n, margin=0.7, squared=squared).backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert torch.isfinite(n.grad).all()


def test_modules_match_functions_and_show_config():
    q, p, n = toy_tuples()
    module = ContrastiveLoss(margin=1.5, reduction="mean")
    torch.testing.assert_close(module(q, p, n), contrastive_loss(q, p, n, 1.5, "mean"))
    assert "margin=1.5" in repr(module) and "reduction='mean'" in repr(module)
    triplet = TripletLoss(squared=False)
    torch.testing.assert_close(triplet(q, p, n), triplet_loss(q, p, n, squared=False))
    assert "squared=False" in repr(triplet)


@pytest.mark.parametrize("cls", [ContrastiveLoss, TripletLoss])
@pytest.mark.parametrize("margin", [0.0, -0.2])
def test_margin_must_be_positive(cls, margin):
    with pytest.raises(ValueError, match=r"margin must be > 0; got margin="):
        cls(margin=margin)


def test_functional_validation_messages():
    q, p, n = toy_tuples()
    with pytest.raises(ValueError, match="margin must be > 0"):
        triplet_loss(q, p, n, margin=0.0)
    with pytest.raises(ValueError, match=r"reduction must be one of .*'avg'"):
        contrastive_loss(q, p, n, reduction="avg")
    with pytest.raises(ValueError, match=r"negatives\.unsqueeze\(1\)"):
        contrastive_loss(q, p, n[:, 0])
    with pytest.raises(ValueError, match="positive must have the query's shape"):
        triplet_loss(q, p[:1], n)
    with pytest.raises(ValueError, match="T x K x D = 2 x K x 2"):
        triplet_loss(q, p, torch.zeros(2, 1, 3, dtype=torch.float64))


def test_build_loss_registry():
    loss = build_loss("triplet", margin=0.3)
    assert isinstance(loss, TripletLoss) and loss.margin == 0.3
    assert isinstance(build_loss("contrastive"), ContrastiveLoss)
    assert set(LOSSES) >= {"contrastive", "triplet"}
    with pytest.raises(ValueError, match=r"Unknown loss 'hinge'; valid names are \['contrastive'"):
        build_loss("hinge")
