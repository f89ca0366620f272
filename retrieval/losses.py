"""Losses for training global descriptors, and a name registry.

Tuple losses (contrastive, triplet) on SfM tuples, listwise AP losses (histogram-binned AP,
Smooth-AP) on batches of labelled images, and any pytorch-metric-learning loss by class name.
Every loss takes both kinds of batch: ``tuple_loss(query, positive, negatives)`` and
``label_loss(descriptors, labels)``.

A tuple batch holds T tuples: ``query`` T x D, ``positive`` T x D and ``negatives`` T x K x D (K
negatives per query), all L2-normalised by the caller.

Two conventions are offered, and a margin only makes sense with the one it was tuned for:

* ``squared=True, reduction="sum"`` (default) follows cirtorch (Radenović et al.): squared
  distances, summed over tuples. cirtorch's example margins (e.g. 0.85 for the contrastive loss)
  belong to this form.
* ``squared=False, reduction="mean"`` is closer to pytorch-metric-learning: plain Euclidean
  distances, hinge not squared, averaged over tuples (not over non-zero terms as its default
  reducer does).

``reduction="none"`` returns the T per-tuple losses (each summed over its K negatives), which is
what :func:`nonzero_loss_fraction` consumes.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

REDUCTIONS = ("sum", "mean", "none")

# Below this squared distance the Euclidean distance's gradient (1 / 2d) blows up; the distance
# is then computed from a clamped value and reported as exactly zero when the points coincide.
_SQ_EPS = 1e-12


def _check_margin(margin: float) -> float:
    """Return margin as float, or raise if it is not a positive number."""
    if not margin > 0:
        raise ValueError(f"margin must be > 0; got margin={margin}.")
    return float(margin)


def _check_reduction(reduction: str) -> str:
    """Return reduction, or raise if it is not one of REDUCTIONS."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got reduction={reduction!r}.")
    return reduction


def _check_tuples(query: Tensor, positive: Tensor, negatives: Tensor) -> None:
    """Raise a clear error unless query, positive are T x D and negatives T x K x D."""
    if query.ndim != 2:
        raise ValueError(
            f"query must be T x D (one row per tuple); got shape {tuple(query.shape)}."
        )
    if positive.shape != query.shape:
        raise ValueError(
            f"positive must have the query's shape {tuple(query.shape)}; "
            f"got {tuple(positive.shape)}."
        )
    if negatives.ndim != 3:
        raise ValueError(
            f"negatives must be T x K x D; got shape {tuple(negatives.shape)}. "
            "For one negative per tuple use negatives.unsqueeze(1)."
        )
    T, D = query.shape
    if negatives.shape[0] != T or negatives.shape[2] != D or negatives.shape[1] == 0:
        raise ValueError(
            f"negatives must be T x K x D = {T} x K x {D} with K >= 1; "
            f"got shape {tuple(negatives.shape)}."
        )


def _squared_distances(query: Tensor, positive: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
    """Squared Euclidean distances: query-positive (T,) and query-negatives (T x K)."""
    sq_pos = (query - positive).pow(2).sum(dim=-1)
    sq_neg = (query.unsqueeze(1) - negatives).pow(2).sum(dim=-1)
    return sq_pos, sq_neg


def _euclidean(sq: Tensor) -> Tensor:
    """Square root of squared distances with a finite gradient where points coincide."""
    return torch.where(sq > 0, sq.clamp_min(_SQ_EPS).sqrt(), torch.zeros_like(sq))


def _reduce(per_tuple: Tensor, reduction: str) -> Tensor:
    """Sum, average or keep the T per-tuple losses."""
    if reduction == "sum":
        return per_tuple.sum()
    if reduction == "mean":
        return per_tuple.mean()
    return per_tuple


def contrastive_loss(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor,
    margin: float = 0.7,
    reduction: str = "sum",
    squared: bool = True,
) -> Tensor:
    """Contrastive loss over tuples (cirtorch semantics by default).

    Per tuple, with Euclidean distance d:
    ``squared=True``: ``0.5 d(q,p)^2 + sum_k 0.5 max(0, margin - d(q,n_k))^2``;
    ``squared=False``: ``d(q,p) + sum_k max(0, margin - d(q,n_k))``.
    ``reduction`` is "sum" over tuples (cirtorch), "mean" over tuples or "none" (T values).
    """
    margin = _check_margin(margin)
    reduction = _check_reduction(reduction)
    _check_tuples(query, positive, negatives)
    sq_pos, sq_neg = _squared_distances(query, positive, negatives)
    hinge = (margin - _euclidean(sq_neg)).clamp_min(0)
    if squared:
        per_tuple = 0.5 * sq_pos + 0.5 * hinge.pow(2).sum(dim=1)
    else:
        per_tuple = _euclidean(sq_pos) + hinge.sum(dim=1)
    return _reduce(per_tuple, reduction)


def triplet_loss(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor,
    margin: float = 0.1,
    reduction: str = "sum",
    squared: bool = True,
) -> Tensor:
    """Triplet loss over tuples (cirtorch semantics by default).

    Per tuple: ``sum_k max(0, margin + d(q,p) - d(q,n_k))`` where d is the squared Euclidean
    distance if ``squared`` (cirtorch) and the plain one otherwise. ``reduction`` is "sum" over
    tuples (cirtorch), "mean" over tuples or "none" (T values).
    """
    margin = _check_margin(margin)
    reduction = _check_reduction(reduction)
    _check_tuples(query, positive, negatives)
    d_pos, d_neg = _squared_distances(query, positive, negatives)
    if not squared:
        d_pos, d_neg = _euclidean(d_pos), _euclidean(d_neg)
    per_tuple = (margin + d_pos.unsqueeze(1) - d_neg).clamp_min(0).sum(dim=1)
    return _reduce(per_tuple, reduction)


class _TupleLoss(nn.Module):
    """Shared configuration of the tuple losses: margin, reduction and distance convention."""

    def __init__(self, margin: float, reduction: str = "sum", squared: bool = True) -> None:
        super().__init__()
        self.margin = _check_margin(margin)
        self.reduction = _check_reduction(reduction)
        self.squared = bool(squared)

    def tuple_loss(self, query: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
        """The loss of T tuples (the module's forward)."""
        return self(query, positive, negatives)

    def label_loss(self, descriptors: Tensor, labels: Tensor) -> Tensor:
        """The loss over all in-batch tuples of labelled descriptors N x D (see
        :func:`_label_tuple_loss`)."""
        return _label_tuple_loss(self, descriptors, labels)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}, squared={self.squared}"


class ContrastiveLoss(_TupleLoss):
    """Module form of :func:`contrastive_loss`."""

    def __init__(self, margin: float = 0.7, reduction: str = "sum", squared: bool = True) -> None:
        super().__init__(margin, reduction, squared)

    def forward(self, query: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
        return contrastive_loss(
            query, positive, negatives, self.margin, self.reduction, self.squared
        )


class TripletLoss(_TupleLoss):
    """Module form of :func:`triplet_loss`."""

    def __init__(self, margin: float = 0.1, reduction: str = "sum", squared: bool = True) -> None:
        super().__init__(margin, reduction, squared)

    def forward(self, query: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
        return triplet_loss(query, positive, negatives, self.margin, self.reduction, self.squared)


# --------------------------------------------------------------------------------------------------
# Label batches for the tuple losses: every image is a query, every pair of the batch is used
# --------------------------------------------------------------------------------------------------


def _label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Positive (same label, not itself) and negative (other label) masks, N x N."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D tensor (one per image); got {tuple(labels.shape)}.")
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _check_descriptors(descriptors: Tensor, labels: Tensor) -> None:
    """Raise unless descriptors are N x D with one label per row."""
    if descriptors.ndim != 2 or labels.shape != descriptors.shape[:1]:
        raise ValueError(
            "label losses take descriptors N x D and labels N; got "
            f"{tuple(descriptors.shape)} and {tuple(labels.shape)}."
        )


def _pairwise_squared(descriptors: Tensor) -> Tensor:
    """N x N squared Euclidean distances (finite gradients, also on the diagonal)."""
    sq_norm = descriptors.pow(2).sum(dim=1)
    gram = descriptors @ descriptors.T
    return (sq_norm.unsqueeze(0) + sq_norm.unsqueeze(1) - 2 * gram).clamp_min(0)


def _padded_positives(relevant: Tensor) -> tuple[Tensor, Tensor]:
    """Column indices of each row's positives, padded to the largest count (Q x P), and a mask of
    the real ones."""
    n_pos = relevant.sum(1)
    width = max(int(n_pos.max()), 1) if len(n_pos) else 1
    order = torch.argsort(relevant.to(torch.int8), dim=1, descending=True, stable=True)
    pad_ok = torch.arange(width, device=relevant.device).unsqueeze(0) < n_pos.unsqueeze(1)
    return order[:, :width], pad_ok


def _label_tuple_loss(loss: _TupleLoss, descriptors: Tensor, labels: Tensor) -> Tensor:
    """A tuple loss over all in-batch tuples: each image queries all its positives and negatives.

    Contrastive: per query, ``sum_p pos(d_qp) + sum_n neg(d_qn)``; triplet: per query,
    ``sum_p sum_n max(0, margin + d_qp - d_qn)``. The reduction runs over the N queries.
    """
    _check_descriptors(descriptors, labels)
    positive, negative = _label_masks(labels)
    sq = _pairwise_squared(descriptors)
    d = sq if loss.squared else _euclidean(sq)
    if isinstance(loss, ContrastiveLoss):
        hinge = (loss.margin - _euclidean(sq)).clamp_min(0)
        if loss.squared:
            pos_term, neg_term = 0.5 * sq, 0.5 * hinge.pow(2)
        else:
            pos_term, neg_term = d, hinge
        per_query = (pos_term * positive).sum(1) + (neg_term * negative).sum(1)
    else:  # N x P x N terms: each query's P positives against all its negatives
        pos_idx, pad_ok = _padded_positives(positive)
        d_pos = d.gather(1, pos_idx)
        terms = (loss.margin + d_pos.unsqueeze(2) - d.unsqueeze(1)).clamp_min(0)
        valid = pad_ok.unsqueeze(2) & negative.unsqueeze(1)
        per_query = (terms * valid).sum(dim=(1, 2))
    return _reduce(per_query, loss.reduction)


# --------------------------------------------------------------------------------------------------
# Listwise losses: average precision over a whole batch (Revaud et al., ICCV'19)
# --------------------------------------------------------------------------------------------------


def _check_ranking(scores: Tensor, relevant: Tensor, valid: Tensor | None) -> None:
    """Raise unless scores, relevant (and valid) are Q x M."""
    if scores.ndim != 2 or relevant.shape != scores.shape:
        raise ValueError(
            "scores and relevant must both be Q x M (queries x ranked items); got "
            f"{tuple(scores.shape)} and {tuple(relevant.shape)}."
        )
    if valid is not None and valid.shape != scores.shape:
        raise ValueError(f"valid must be Q x M like scores; got {tuple(valid.shape)}.")


def quantized_ap(
    scores: Tensor,
    relevant: Tensor,
    valid: Tensor | None = None,
    num_bins: int = 25,
    min_score: float = 0.0,
    max_score: float = 1.0,
) -> Tensor:
    """Differentiable histogram-binned AP of each query (Q values) of a Q x M score matrix.

    The similarity range [min_score, max_score] holds ``num_bins`` evenly spaced bin centres; each
    score is shared between its two nearest centres with triangular weights (scores outside the
    range fall in the end bins), so the histogram is piecewise linear in the scores. With the
    bins ranked from the highest, AP = sum over bins of precision(up to the bin) x recall(the bin).
    It equals the exact AP when every item sits on its own bin centre; items split between two
    bins are counted in part in both, which biases AP slightly (Revaud et al., eq. 6-7).
    ``relevant`` marks the positives and ``valid`` (default: all) the items that are ranked.
    A query without positives gets AP 0. Memory is O(Q x M + Q x num_bins).
    """
    _check_ranking(scores, relevant, valid)
    if num_bins < 2 or not max_score > min_score:
        raise ValueError(
            f"need num_bins >= 2 and max_score > min_score; got num_bins={num_bins}, "
            f"range [{min_score}, {max_score}]."
        )
    width = (max_score - min_score) / (num_bins - 1)
    # Bin coordinate, 0 at max_score; an item at t sends 1 - frac to bin floor(t), frac to the next.
    t = ((max_score - scores) / width).clamp(0, num_bins - 1)
    low = t.detach().floor().clamp(max=num_bins - 2).long()
    frac = t - low
    weight = torch.ones_like(scores) if valid is None else valid.to(scores.dtype)
    rel = relevant.to(scores.dtype) * weight
    histogram = scores.new_zeros(scores.shape[0], num_bins)
    count = histogram.scatter_add(1, low, (1 - frac) * weight).scatter_add(
        1, low + 1, frac * weight
    )
    hits = histogram.scatter_add(1, low, (1 - frac) * rel).scatter_add(1, low + 1, frac * rel)
    precision = hits.cumsum(1) / count.cumsum(1).clamp_min(1e-12)
    n_relevant = rel.sum(1)
    return (precision * hits).sum(1) / n_relevant.clamp_min(1e-12)


def smooth_ap(
    scores: Tensor, relevant: Tensor, valid: Tensor | None = None, temperature: float = 0.01
) -> Tensor:
    """Smooth-AP of each query (Brown et al., ECCV'20): ranks counted with a sigmoid.

    Every positive i of a query gets ``R+(i) / R(i)`` with ``R(i) = 1 + sum_j sigmoid((s_j - s_i) /
    temperature)`` over the other valid items j (over the other positives for R+); AP is the mean
    over the query's positives. Cost O(Q x P x M) for P positives per query, so it suits m x k
    batches. A query without positives gets AP 0.
    """
    _check_ranking(scores, relevant, valid)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    valid = torch.ones_like(relevant, dtype=torch.bool) if valid is None else valid.bool()
    relevant = relevant.bool() & valid
    n_pos = relevant.sum(1)
    pos_idx, pad_ok = _padded_positives(relevant)
    pos_scores = scores.gather(1, pos_idx)
    above = torch.sigmoid((scores.unsqueeze(1) - pos_scores.unsqueeze(2)) / temperature)
    others = torch.ones_like(above, dtype=torch.bool)
    others.scatter_(2, pos_idx.unsqueeze(2), False)  # a positive does not rank against itself
    rank_all = 1 + (above * (others & valid.unsqueeze(1))).sum(2)
    rank_pos = 1 + (above * (others & relevant.unsqueeze(1))).sum(2)
    per_positive = (rank_pos / rank_all) * pad_ok
    return per_positive.sum(1) / n_pos.clamp_min(1)


def _full_precision(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The tensors in at least float32 (mixed precision hands over bf16/fp16 descriptors)."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors)


class _ListwiseLoss(nn.Module):
    """1 - mAP of a batch: with labels, every image ranks all the others; with tuples, each query
    ranks its positive and negatives."""

    def per_query_ap(self, scores: Tensor, relevant: Tensor, valid: Tensor | None) -> Tensor:
        raise NotImplementedError

    def label_loss(self, descriptors: Tensor, labels: Tensor) -> Tensor:
        """1 - mean AP over the images that have another image of their class in the batch."""
        _check_descriptors(descriptors, labels)
        positive, _ = _label_masks(labels)
        has_positive = positive.any(1)
        if not bool(has_positive.any()):
            raise ValueError(
                "no image of the batch has another image of its class: AP is undefined. Sample "
                "batches of m classes x k >= 2 images each."
            )
        valid = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        # Binning needs full precision: no autocast to bf16 for the scores.
        with torch.autocast(descriptors.device.type, enabled=False):
            (descriptors,) = _full_precision(descriptors)
            ap = self.per_query_ap(descriptors @ descriptors.T, positive, valid)
        return 1 - ap[has_positive].mean()

    def tuple_loss(self, query: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
        """1 - mean AP of the tuples, each query ranking [positive, negatives...]."""
        _check_tuples(query, positive, negatives)
        with torch.autocast(query.device.type, enabled=False):
            query, positive, negatives = _full_precision(query, positive, negatives)
            to_positive = (query * positive).sum(-1, keepdim=True)
            scores = torch.cat([to_positive, torch.einsum("td,tkd->tk", query, negatives)], dim=1)
            relevant = torch.zeros_like(scores, dtype=torch.bool)
            relevant[:, 0] = True
            return 1 - self.per_query_ap(scores, relevant, None).mean()

    def forward(self, descriptors: Tensor, labels: Tensor) -> Tensor:
        return self.label_loss(descriptors, labels)


class APLoss(_ListwiseLoss):
    """Histogram-binned AP loss (Revaud et al., ICCV'19): 1 - mAP, see :func:`quantized_ap`."""

    def __init__(self, num_bins: int = 25, min_score: float = 0.0, max_score: float = 1.0) -> None:
        super().__init__()
        if int(num_bins) < 2 or not float(max_score) > float(min_score):
            raise ValueError(
                f"AP loss needs num_bins >= 2 and max_score > min_score; got num_bins={num_bins}, "
                f"min_score={min_score}, max_score={max_score}."
            )
        self.num_bins, self.min_score, self.max_score = int(num_bins), min_score, max_score

    def per_query_ap(self, scores: Tensor, relevant: Tensor, valid: Tensor | None) -> Tensor:
        return quantized_ap(
            scores, relevant, valid, self.num_bins, float(self.min_score), float(self.max_score)
        )

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, range=[{self.min_score}, {self.max_score}]"


class SmoothAPLoss(_ListwiseLoss):
    """Smooth-AP loss (Brown et al., ECCV'20): 1 - mAP, see :func:`smooth_ap`."""

    def __init__(self, temperature: float = 0.01) -> None:
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0; got temperature={temperature}.")
        self.temperature = float(temperature)

    def per_query_ap(self, scores: Tensor, relevant: Tensor, valid: Tensor | None) -> Tensor:
        return smooth_ap(scores, relevant, valid, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


# --------------------------------------------------------------------------------------------------
# Any pytorch-metric-learning loss by name (optional dependency)
# --------------------------------------------------------------------------------------------------

PML_INSTALL = "pip install pytorch-metric-learning  (or: pip install -e '.[pml]')"


def _pml_losses() -> Any:
    try:
        from pytorch_metric_learning import losses
    except ImportError as err:
        raise ImportError(f"loss=pml needs pytorch-metric-learning: {PML_INSTALL}") from err
    return losses


def pml_loss_names() -> list[str]:
    """Names of the losses pytorch-metric-learning offers."""
    losses = _pml_losses()
    base = losses.BaseMetricLossFunction
    return sorted(
        n
        for n in dir(losses)
        if isinstance(getattr(losses, n), type)
        and issubclass(getattr(losses, n), base)
        and getattr(losses, n) is not base
    )


class PMLLoss(nn.Module):
    """A pytorch-metric-learning loss picked by class name (``loss=pml loss.name=...``).

    ``num_classes`` and ``embedding_size`` are passed on only to losses that take them (the
    classification-style ones such as ArcFaceLoss, whose weights then train with the network).
    On tuples, (query, positive, negative) triplets are handed to the loss as its indices_tuple.
    """

    def __init__(
        self,
        name: str = "MultiSimilarityLoss",
        num_classes: int | None = None,
        embedding_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        losses = _pml_losses()
        cls = getattr(losses, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, losses.BaseMetricLossFunction)):
            raise ValueError(
                f"Unknown pytorch-metric-learning loss {name!r}; valid names: "
                f"{', '.join(pml_loss_names())}."
            )
        accepted = inspect.signature(cls.__init__).parameters
        for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
            if key in accepted and value is not None:
                kwargs[key] = int(value)
        self.pml_name = str(name)
        self.loss = cls(**kwargs)

    def label_loss(self, descriptors: Tensor, labels: Tensor) -> Tensor:
        """The pml loss of descriptors N x D with labels N."""
        _check_descriptors(descriptors, labels)
        return self.loss(descriptors, labels)

    def tuple_loss(self, query: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
        """The pml loss restricted to the (query, positive, negative_k) triplets of the tuples."""
        _check_tuples(query, positive, negatives)
        if any(True for _ in self.loss.parameters()):
            raise ValueError(
                f"{self.pml_name} learns per-class weights and needs class labels: train it on "
                "label batches (e.g. data=synthetic_labels), not on SfM tuples."
            )
        T, K, D = negatives.shape
        embeddings = torch.cat([query, positive, negatives.reshape(T * K, D)])
        # Unique labels per tuple: the triplets below are the only pairs the loss may use.
        labels = torch.cat([torch.arange(T), torch.arange(T), T + torch.arange(T * K)])
        anchors = torch.arange(T).repeat_interleave(K)
        triplets = (anchors, T + anchors, 2 * T + torch.arange(T * K))
        device = query.device
        return self.loss(embeddings, labels.to(device), tuple(t.to(device) for t in triplets))

    def forward(self, descriptors: Tensor, labels: Tensor) -> Tensor:
        return self.label_loss(descriptors, labels)

    def extra_repr(self) -> str:
        return f"name={self.pml_name!r}"


# Name -> loss module class. Every loss has ``tuple_loss(query, positive, negatives)`` for SfM
# tuples and ``label_loss(descriptors, labels)`` for batches of labelled images. A capitalised
# name not listed here is a pytorch-metric-learning loss (PMLLoss).
LOSSES: dict[str, type[nn.Module]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "ap": APLoss,
    "smooth_ap": SmoothAPLoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered under ``name`` in LOSSES with ``kwargs``; a capitalised
    name is a pytorch-metric-learning loss (e.g. MultiSimilarityLoss)."""
    if name in LOSSES:
        return LOSSES[name](**kwargs)
    if name[:1].isupper():
        return PMLLoss(name, **kwargs)
    raise ValueError(
        f"Unknown loss {name!r}; valid names are {list(LOSSES)} or a pytorch-metric-learning "
        "loss class name (e.g. MultiSimilarityLoss)."
    )


def nonzero_loss_fraction(per_tuple: Tensor) -> float:
    """Fraction of tuples whose loss is > 0 (pass the output of a loss with reduction="none").

    For the triplet loss this is the share of tuples with a negative inside the margin. The
    contrastive loss's positive term makes almost every tuple non-zero, so the figure says little
    there.
    """
    if per_tuple.ndim != 1 or per_tuple.numel() == 0:
        raise ValueError(
            "nonzero_loss_fraction expects the T per-tuple losses (a non-empty 1-D tensor, from "
            f'reduction="none"); got shape {tuple(per_tuple.shape)}.'
        )
    return (per_tuple.detach() > 0).float().mean().item()
