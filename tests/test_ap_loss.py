"""Listwise losses: histogram-binned AP and Smooth-AP against exact AP, gradients, label and tuple
forms of every loss, the pytorch-metric-learning adapter."""

import builtins
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from retrieval.losses import (
    LOSSES,
    APLoss,
    PMLLoss,
    SmoothAPLoss,
    build_loss,
    contrastive_loss,
    quantized_ap,
    smooth_ap,
    triplet_loss,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def exact_ap(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Plain non-interpolated AP per row: mean precision at the rank of each positive."""
    out = []
    for s, r in zip(scores, relevant, strict=True):
        hits = r[torch.argsort(s, descending=True)].double()
        precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
        out.append((precision * hits).sum() / hits.sum())
    return torch.stack(out)


def toy_rankings(n_queries: int = 6, n_items: int = 20, seed: int = 0):
    """Random rankings as evenly spaced scores in [0, 1] (rank r -> 1 - r / (n - 1))."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.stack([torch.randperm(n_items, generator=g) for _ in range(n_queries)])
    scores = 1 - ranks.double() / (n_items - 1)
    relevant = torch.rand(n_queries, n_items, generator=g) < 0.3
    relevant[:, 0] = True  # at least one positive per query
    return scores, relevant


@pytest.mark.parametrize("refine", [1, 4, 10])
def test_quantized_ap_with_many_bins_is_the_exact_ap(refine):
    scores, relevant = toy_rankings()
    num_bins = (scores.shape[1] - 1) * refine + 1  # every score on a bin centre
    ap = quantized_ap(scores, relevant, num_bins=num_bins)
    torch.testing.assert_close(ap, exact_ap(scores, relevant), atol=1e-3, rtol=0)
    loss = APLoss(num_bins=num_bins)
    torch.testing.assert_close(
        1 - ap.mean(), 1 - exact_ap(scores, relevant).mean(), atol=1e-3, rtol=0
    )
    assert loss.num_bins == num_bins


def test_smooth_ap_with_a_small_temperature_is_the_exact_ap():
    scores, relevant = toy_rankings(seed=1)
    ap = smooth_ap(scores, relevant, temperature=1e-4)
    torch.testing.assert_close(ap, exact_ap(scores, relevant), atol=1e-3, rtol=0)


def test_quantized_ap_stays_close_to_exact_ap_off_the_bin_centres():
    # An item split between two bins is counted in part in both (Revaud et al.): a small bias.
    g = torch.Generator().manual_seed(2)
    scores = torch.rand(20, 50, generator=g, dtype=torch.float64)
    relevant = torch.rand(20, 50, generator=g) < 0.2
    relevant[:, 0] = True
    error = (quantized_ap(scores, relevant, num_bins=25) - exact_ap(scores, relevant)).abs()
    assert float(error.mean()) < 0.03


def test_ap_gradients_pass_gradcheck():
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    relevant = torch.rand(3, 7, generator=g) < 0.5
    relevant[:, 0] = True
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 3] = False
    assert torch.autograd.gradcheck(lambda s: quantized_ap(s, relevant, valid, 10), (scores,))
    assert torch.autograd.gradcheck(lambda s: smooth_ap(s, relevant, valid, 0.1), (scores,))
    descriptors = F.normalize(torch.rand(6, 4, generator=g, dtype=torch.float64), dim=1)
    descriptors.requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda d: APLoss(10).label_loss(d, labels), (descriptors,))


def test_valid_mask_removes_items_from_the_ranking():
    scores, relevant = toy_rankings(seed=4)
    valid = torch.ones_like(relevant)
    valid[:, 5:8] = False
    num_bins = (scores.shape[1] - 1) * 2 + 1
    kept = quantized_ap(scores, relevant, valid, num_bins=num_bins)
    dropped = exact_ap(scores[:, valid[0]], relevant[:, valid[0]])
    torch.testing.assert_close(kept, dropped, atol=1e-6, rtol=0)


def test_label_loss_ranks_every_other_image_and_skips_itself():
    # Two tight classes far apart: a perfect ranking whatever the self-similarity.
    e = torch.eye(3)
    descriptors = torch.stack([e[0], e[0], e[0], e[1], e[1], e[2]])
    for loss in (APLoss(), SmoothAPLoss()):
        labels = torch.tensor([0, 0, 0, 1, 1, 1])
        assert float(loss.label_loss(descriptors, labels)) > 0.1  # image 5 sits apart from 3, 4
        # A lone image (no other of its class) is not a query...
        labels = torch.tensor([0, 0, 0, 1, 1, 2])
        assert float(loss.label_loss(descriptors, labels)) == pytest.approx(0, abs=1e-6)
        # ... but it is a negative for the others.
        among = torch.stack([e[0], e[0], e[0], e[1], e[1], e[0]])
        assert float(loss.label_loss(among, labels)) > 0.1
    with pytest.raises(ValueError, match="no image of the batch has another image of its class"):
        APLoss().label_loss(descriptors, torch.arange(6))


def test_ap_on_tuples_ranks_the_positive_among_the_negatives():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = F.normalize(torch.tensor([[1.0, 0.1], [0.0, 1.0]]), dim=1)
    n = F.normalize(torch.tensor([[[0.0, 1.0], [0.5, 1.0]], [[1.0, 0.1], [1.0, 0.3]]]), dim=2)
    # First tuple: positive on top (AP 1); second: below both negatives (AP 1/3).
    expected = 1 - (1 + 1 / 3) / 2
    assert float(APLoss(num_bins=1001).tuple_loss(q, p, n)) == pytest.approx(expected, abs=2e-3)
    assert float(SmoothAPLoss(1e-4).tuple_loss(q, p, n)) == pytest.approx(expected, abs=1e-3)


def test_tuple_losses_on_labels_equal_their_in_batch_tuples():
    g = torch.Generator().manual_seed(5)
    descriptors = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])  # one positive per image: one tuple per query
    partner = torch.tensor([1, 0, 3, 2, 5, 4])
    negatives = torch.stack([descriptors[labels != labels[i]] for i in range(6)])
    pairs = [
        (contrastive_loss, build_loss("contrastive", margin=0.9)),
        (triplet_loss, build_loss("triplet", margin=0.3)),
    ]
    for fn, loss in pairs:
        for squared in (True, False):
            loss.squared = squared
            expected = fn(descriptors, descriptors[partner], negatives, loss.margin, "sum", squared)
            torch.testing.assert_close(loss.label_loss(descriptors, labels), expected)


def test_every_loss_option_builds_and_takes_both_kinds_of_batch():
    g = torch.Generator().manual_seed(6)
    descriptors = F.normalize(torch.rand(8, 4, generator=g), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    q, p, n = descriptors[:2], descriptors[2:4], descriptors[4:].reshape(2, 2, 4)
    for path in sorted(CONF.glob("loss/*.yaml")):
        args = OmegaConf.to_container(OmegaConf.load(path))
        loss = build_loss(args.pop("name"), **args)
        assert torch.isfinite(loss.label_loss(descriptors, labels)), path.stem
        assert torch.isfinite(loss.tuple_loss(q, p, n)), path.stem
    assert {"ap", "smooth_ap"} <= set(LOSSES)


def test_invalid_ap_arguments_fail_clearly():
    with pytest.raises(ValueError, match="num_bins >= 2"):
        APLoss(num_bins=1)
    with pytest.raises(ValueError, match="max_score > min_score"):
        APLoss(min_score=1.0, max_score=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SmoothAPLoss(temperature=0)
    with pytest.raises(ValueError, match="Q x M"):
        quantized_ap(torch.rand(3), torch.ones(3, dtype=torch.bool))


def test_pml_adapter_matches_the_library_and_uses_only_tuple_triplets():
    from pytorch_metric_learning import losses as pml

    g = torch.Generator().manual_seed(7)
    descriptors = F.normalize(torch.rand(8, 4, generator=g), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    adapter = build_loss("MultiSimilarityLoss")
    assert isinstance(adapter, PMLLoss)
    torch.testing.assert_close(
        adapter.label_loss(descriptors, labels), pml.MultiSimilarityLoss()(descriptors, labels)
    )
    q, p, n = descriptors[:2], descriptors[2:4], descriptors[4:].reshape(2, 2, 4)
    loss = build_loss("TripletMarginLoss", margin=0.5).tuple_loss(q, p, n)
    d_pos = (q - p).norm(dim=1, keepdim=True)
    d_neg = (q.unsqueeze(1) - n).norm(dim=2)
    terms = (d_pos - d_neg + 0.5).clamp_min(0)
    torch.testing.assert_close(loss, terms[terms > 0].mean())  # pml averages non-zero triplets
    head = build_loss("ArcFaceLoss", num_classes=4, embedding_size=4)
    assert sum(p.numel() for p in head.parameters()) == 16  # its class weights train too
    with pytest.raises(ValueError, match="needs class labels"):
        head.tuple_loss(q, p, n)


def test_pml_errors_name_the_fix(monkeypatch):
    with pytest.raises(ValueError, match="MultiSimilarityLoss"):
        build_loss("NoSuchLoss")
    real_import = builtins.__import__

    def no_pml(name, *args, **kwargs):
        if name.startswith("pytorch_metric_learning"):
            raise ImportError("no module")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pml)
    with pytest.raises(ImportError, match="pip install pytorch-metric-learning"):
        build_loss("MultiSimilarityLoss")
