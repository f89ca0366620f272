"""Poolings as pure functions of a CNN feature map (B x C x h x w) and an optional validity mask.

As ``torch.nn.functional`` is to ``torch.nn``: the modules of :mod:`retrieval.models.pooling`
wrap these. ``mask`` is bool, B x h x w, True where the map is valid. Outputs (B x D) are not
L2-normalised: the network does that afterwards. In a padded batch every image sits at the
top-left and padding fills the bottom/right, so the regional poolings (R-MAC family, grid max)
rely on the valid part of each sample being a top-left rectangle; the global ones (MAC, SPoC,
GeM, CroW, soft BoW) accept any mask. The activation responses at the end say which positions of
one image's map a pooling draws from (the pictures of a run).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# (y0, x0, height, width) of a region of the feature map, in feature-map cells.
Region = tuple[int, int, int, int]

# R-MAC: target overlap between neighbouring regions, and the candidate numbers k of extra
# regions along the long side of a non-square map (cirtorch tries 2..7 regions at level 1).
_RMAC_OVERLAP = 0.4
_RMAC_EXTRA_STEPS = np.arange(1, 7, dtype=np.float32)


class PoolingArgumentError(ValueError):
    """A pooling argument out of range; `argument` names it (a config reports pooling.args.X)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


# ----------------------------------------------------------------------------------------------
# input checks and mask helpers
# ----------------------------------------------------------------------------------------------


def check_input(x: Tensor, mask: Tensor | None) -> None:
    """Raise ValueError unless x is B x C x h x w and mask (if any) is a bool B x h x w tensor."""
    if x.dim() != 4:
        raise ValueError(
            f"pooling expects a feature map x of shape B x C x h x w, got shape {tuple(x.shape)}; "
            "add the batch dimension with x.unsqueeze(0)"
        )
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise ValueError(
            f"pooling mask must be a bool tensor (True where valid), got dtype {mask.dtype}; "
            "convert it with mask.bool()"
        )
    expected = (x.shape[0], x.shape[2], x.shape[3])
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"pooling mask must have shape B x h x w = {expected} to match x of shape "
            f"{tuple(x.shape)}, got {tuple(mask.shape)}"
        )


def check_p(p: float | Tensor, channels: int | None = None) -> None:
    """Raise unless p is a number >= 1, a scalar tensor or one p per channel (of `channels`)."""
    if isinstance(p, Tensor):
        if p.dim() > 0 and channels is not None and tuple(p.shape) != (channels,):
            raise PoolingArgumentError(
                "p",
                f"GeM p must be a number, a scalar tensor or one p per channel (shape ({channels},)"
                f" for this map), got a tensor of shape {tuple(p.shape)}",
            )
    elif isinstance(p, bool) or not isinstance(p, numbers.Real) or p < 1:
        raise PoolingArgumentError(
            "p", f"GeM p must be a number >= 1 (p=1 is SPoC, p -> inf is MAC), got p={p!r}"
        )


def check_levels(levels: int) -> None:
    """Raise unless levels is an int >= 1."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise PoolingArgumentError(
            "levels", f"regional pooling: levels must be an int >= 1, got {levels!r}"
        )


def check_crow_exponents(a: float, b: float) -> None:
    """Raise unless both CroW exponents are > 0."""
    for name, value in (("a", a), ("b", b)):
        if value <= 0:
            raise PoolingArgumentError(
                name, f"CroW exponents a and b must be > 0, got a={a}, b={b}"
            )


def _valid_counts(mask: Tensor) -> Tensor:
    """Number of valid positions per sample (B x 1), raising if a sample has none."""
    counts = mask.flatten(1).sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        empty = (counts.squeeze(1) == 0).nonzero().flatten().tolist()
        raise ValueError(
            f"pooling mask has no valid position for sample(s) {empty}; every image needs at "
            "least one True cell in its mask"
        )
    return counts


def _valid_sizes(mask: Tensor) -> list[tuple[int, int]]:
    """Each sample's valid (h_i, w_i), checking its mask is a top-left rectangle."""
    _valid_counts(mask)
    heights = mask.any(dim=2).sum(dim=1)
    widths = mask.any(dim=1).sum(dim=1)
    h, w = mask.shape[1:]
    rows = torch.arange(h, device=mask.device)[None, :, None] < heights[:, None, None]
    cols = torch.arange(w, device=mask.device)[None, None, :] < widths[:, None, None]
    bad = ((rows & cols) != mask).flatten(1).any(dim=1)
    if bool(bad.any()):
        raise ValueError(
            f"regional pooling needs each sample's mask to be a top-left rectangle (images padded "
            f"at the bottom/right), but sample(s) {bad.nonzero().flatten().tolist()} are not; "
            "pad images at the bottom/right only, or use a global pooling (mac, spoc, gem, crow)"
        )
    return list(zip(heights.tolist(), widths.tolist(), strict=True))


def _per_valid_size(x: Tensor, mask: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply fn to each sample's valid top-left crop (grouping equal sizes) and restore order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(_valid_sizes(mask)):
        groups.setdefault(size, []).append(i)
    outputs, order = [], []
    for (h, w), idx in groups.items():
        outputs.append(fn(x[idx, :, :h, :w]))
        order.extend(idx)
    inverse = torch.empty(len(order), dtype=torch.long, device=x.device)
    inverse[torch.tensor(order, device=x.device)] = torch.arange(len(order), device=x.device)
    return torch.cat(outputs)[inverse]


def _l2n(v: Tensor, eps: float) -> Tensor:
    """Rows of v divided by (their L2 norm + eps), as cirtorch normalises regions."""
    return v / (v.norm(p=2, dim=1, keepdim=True) + eps)


# ----------------------------------------------------------------------------------------------
# global poolings
# ----------------------------------------------------------------------------------------------


def mac(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Maximum activation of convolutions: per-channel max over the valid positions (B x C)."""
    check_input(x, mask)
    if mask is None:
        return x.amax(dim=(-2, -1))
    _valid_counts(mask)
    return x.masked_fill(~mask[:, None], float("-inf")).amax(dim=(-2, -1))


def spoc(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum-pooled convolutional features, as a mean over the valid positions (B x C)."""
    check_input(x, mask)
    if mask is None:
        return x.mean(dim=(-2, -1))
    counts = _valid_counts(mask)
    return x.masked_fill(~mask[:, None], 0.0).sum(dim=(-2, -1)) / counts


def gem(
    x: Tensor, p: float | Tensor = 3.0, eps: float = 1e-6, mask: Tensor | None = None
) -> Tensor:
    """GeM: (mean over valid positions of max(x, eps)^p)^(1/p); p scalar or one per channel."""
    check_input(x, mask)
    check_p(p, x.shape[1])
    # One p per channel broadcasts as C x 1 x 1 over the map and as C over the B x C result.
    p_map = p.view(-1, 1, 1) if isinstance(p, Tensor) and p.dim() == 1 else p
    powered = x.clamp(min=eps).pow(p_map)
    if mask is None:
        mean = powered.mean(dim=(-2, -1))
    else:
        counts = _valid_counts(mask)
        mean = powered.masked_fill(~mask[:, None], 0.0).sum(dim=(-2, -1)) / counts
    return mean.pow(1.0 / p)


def crow(
    x: Tensor, a: float = 2.0, b: float = 2.0, eps: float = 1e-6, mask: Tensor | None = None
) -> Tensor:
    """Cross-dimensional weighting (Kalantidis et al. 2016): channel weight * weighted spatial sum.

    Reading of the paper's formulas, over the valid positions (i, j) of one image:

    - spatial: Z_ij = sum_k x_kij, S_ij = (Z_ij / ||Z||_a)^(1/b), ||Z||_a = (sum_ij Z_ij^a)^(1/a);
    - channel: Q_k = (number of positions with x_kij > 0) / (number of valid positions) and
      Omega_k = log(sum_j Q_j / (eps + Q_k)): rare (sparse) channels get larger weights;
    - descriptor: f_k = Omega_k * sum_ij S_ij x_kij.

    Guards for degenerate maps: ||Z||_a is floored at eps and S_ij at eps^(1/b) (so the gradient
    stays finite where Z is zero; those positions have x = 0 and add nothing), and sum_j Q_j is
    floored at eps, so an all-zero map gives Omega = 0 and a zero descriptor, not NaN.
    Omega is a count, so no gradient flows through it.
    """
    check_input(x, mask)
    check_crow_exponents(a, b)
    if mask is None:
        counts = x.shape[-2] * x.shape[-1]
    else:
        counts = _valid_counts(mask)
        x = x.masked_fill(~mask[:, None], 0.0)
    z = x.sum(dim=1)
    norm = z.pow(a).sum(dim=(-2, -1), keepdim=True).clamp(min=eps**a).pow(1.0 / a)
    spatial = (z / norm).clamp(min=eps).pow(1.0 / b)
    weighted = (x * spatial[:, None]).sum(dim=(-2, -1))
    q = (x > 0).sum(dim=(-2, -1)).to(x.dtype) / counts
    omega = torch.log(q.sum(dim=1, keepdim=True).clamp(min=eps) / (q + eps))
    return omega * weighted


def soft_bow(
    x: Tensor,
    codebook: Tensor,
    alpha: float = 30.0,
    idf: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Soft tf(-idf) histogram (B x K) of a B x C x h x w map over a K x C codebook."""
    check_input(x, mask)
    if codebook.dim() != 2 or codebook.shape[1] != x.shape[1]:
        raise ValueError(
            f"soft_bow: codebook must be K x C with C={x.shape[1]} channels, got shape "
            f"{tuple(codebook.shape)}"
        )
    words = F.normalize(codebook, dim=1)
    logits = alpha * torch.einsum("bchw,kc->bkhw", F.normalize(x, dim=1), words)
    tf = spoc(logits.softmax(dim=1), mask=mask)  # mean soft counts over the valid positions
    return tf if idf is None else tf * idf


# ----------------------------------------------------------------------------------------------
# regional poolings (R-MAC family)
# ----------------------------------------------------------------------------------------------


# The grid arithmetic below runs in float32 on purpose: cirtorch computes it with float32 tensors,
# and rounding there decides ties between values of k and sometimes puts the last start one cell
# short of the edge (e.g. 7 * float32(31 / 7) < 31). Exact arithmetic would give a different grid.


def _extra_regions(short: int, long: int) -> int:
    """Number k of extra regions along the long side: the one whose overlap is closest to 40%."""
    # k extra windows sit (long - short) / k apart, so neighbours overlap by 1 - step / short.
    # The reference divides by k as a multiplication by float32(1 / k); rounding then breaks ties.
    step = (np.float32(1.0) / _RMAC_EXTRA_STEPS) * np.float32(long - short)
    area = np.float32(short * short)
    overlap = (area - np.float32(short) * step) / area
    return int(np.argmin(np.abs(overlap - np.float32(_RMAC_OVERLAP)))) + 1  # first on ties


def _region_starts(extent: int, side: int, count: int) -> list[int]:
    """Starts of `count` windows of `side` spread evenly from 0 towards extent - side."""
    if count == 1:
        return [0]
    step = np.float32((extent - side) / (count - 1))
    # cirtorch floors (half side - 1) + i * step in float32, then removes the offset again.
    offset = np.float32(side // 2 - 1)
    positions = offset + np.arange(count, dtype=np.float32) * step
    return [int(v) - int(offset) for v in np.floor(positions)]


@functools.lru_cache(maxsize=512)
def _rmac_grid(h: int, w: int, levels: int) -> tuple[Region, ...]:
    """Cached R-MAC grid; see rmac_regions."""
    short, long = min(h, w), max(h, w)
    extra = 0 if h == w else _extra_regions(short, long)
    extra_h, extra_w = (extra, 0) if h > w else (0, extra)
    regions: list[Region] = []
    for level in range(1, levels + 1):
        side = (2 * short) // (level + 1)
        if side == 0:
            continue
        for y0 in _region_starts(h, side, level + extra_h):
            for x0 in _region_starts(w, side, level + extra_w):
                regions.append((y0, x0, side, side))
    return tuple(regions)


def rmac_regions(h: int, w: int, levels: int = 3) -> list[Region]:
    """R-MAC regions (y0, x0, height, width) of an h x w map (Tolias et al. ICLR'16, cirtorch grid).

    Level l has square regions of side floor(2 * min(h, w) / (l + 1)), l of them along the short
    side and l + k along the long side, evenly spaced from edge to edge (starts floored, in
    float32 as cirtorch); k (1..6) is the number of extra regions that brings the overlap of
    neighbouring level-1 regions closest to 40%, and 0 for a square map. Levels whose side would
    be 0 are skipped. The whole-map region that R-MAC adds on top is not in the list.
    """
    for name, value in (("h", h), ("w", w), ("levels", levels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"rmac_regions: {name} must be an int >= 1, got {value!r}")
    return list(_rmac_grid(h, w, levels))


def _regional(
    x: Tensor,
    pool: Callable[[Tensor], Tensor],
    levels: int,
    eps: float,
    mask: Tensor | None,
) -> Tensor:
    """Sum of L2-normalised pool() vectors of the whole map and of every R-MAC region."""
    check_input(x, mask)
    check_levels(levels)

    def dense(t: Tensor) -> Tensor:
        out = _l2n(pool(t), eps)
        for y0, x0, rh, rw in _rmac_grid(t.shape[-2], t.shape[-1], levels):
            out = out + _l2n(pool(t[..., y0 : y0 + rh, x0 : x0 + rw]), eps)
        return out

    if mask is None:
        return dense(x)
    return _per_valid_size(x, mask, dense)


def rmac(x: Tensor, levels: int = 3, eps: float = 1e-6, mask: Tensor | None = None) -> Tensor:
    """Regional MAC: sum over the whole map and the R-MAC regions of L2-normalised MAC vectors."""
    return _regional(x, lambda t: t.amax(dim=(-2, -1)), levels, eps, mask)


def rgem(
    x: Tensor,
    p: float | Tensor = 3.0,
    levels: int = 3,
    eps: float = 1e-6,
    mask: Tensor | None = None,
) -> Tensor:
    """Regional GeM: R-MAC with GeM (power p) instead of max in each region."""
    check_input(x, mask)
    check_p(p, x.shape[1])
    return _regional(x, lambda t: gem(t, p=p, eps=eps), levels, eps, mask)


def rspoc(x: Tensor, levels: int = 3, eps: float = 1e-6, mask: Tensor | None = None) -> Tensor:
    """Regional SPoC: R-MAC with the mean instead of max in each region."""
    return _regional(x, lambda t: t.mean(dim=(-2, -1)), levels, eps, mask)


def grid_max(x: Tensor, grid: tuple[int, int], mask: Tensor | None = None) -> Tensor:
    """Adaptive max pool of each valid map to grid (gh, gw), flattened to B x (C * gh * gw).

    On AlexNet/VGG trunks (cut before their last max-pool) this is exactly torchvision's last
    max-pool followed by its adaptive average pool at 224 px, the input of fc6.
    """
    check_input(x, mask)

    def pool(t: Tensor) -> Tensor:
        return F.adaptive_max_pool2d(t, grid).flatten(1)

    return pool(x) if mask is None else _per_valid_size(x, mask, pool)


# ----------------------------------------------------------------------------------------------
# activation responses: where in one image's non-negative C x h x w map a pooling draws from
# ----------------------------------------------------------------------------------------------


def sum_response(x: Tensor) -> Tensor:
    """h x w sum over channels, sum_c x (what SPoC averages)."""
    return x.sum(dim=0)


def max_votes(x: Tensor) -> Tensor:
    """h x w maxima won: each channel adds its maximum at its argmax position (MAC)."""
    values, positions = x.flatten(1).max(dim=1)
    heat = torch.zeros(x.shape[1] * x.shape[2], dtype=x.dtype, device=x.device)
    heat.index_add_(0, positions, values)
    return heat.reshape(x.shape[1:])


def power_response(x: Tensor, p: float | Tensor) -> Tensor:
    """h x w share of GeM's pooled sums, sum_c x^p, with p clamped to >= 1 as GeM uses it."""
    p = torch.as_tensor(p).detach().to(x).clamp(min=1.0)
    return x.pow(p.view(-1, 1, 1) if p.dim() == 1 else p).sum(dim=0)
