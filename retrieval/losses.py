"""Tuple losses for training global descriptors: contrastive and triplet, plus a name registry.

A batch holds T tuples: ``query`` T x D, ``positive`` T x D and ``negatives`` T x K x D (K
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


# Name -> loss module class; other losses (e.g. "ap") register themselves here.
LOSSES: dict[str, type[nn.Module]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered under ``name`` in LOSSES with ``kwargs``."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; valid names are {sorted(LOSSES)}.")
    return LOSSES[name](**kwargs)


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
