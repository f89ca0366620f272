"""Poolings that turn a CNN feature map (B x C x h x w) into one descriptor per image (B x D).

Each pooling is a pure function of the map plus an optional validity ``mask`` (bool, B x h x w, True
where the map is valid), with a thin ``nn.Module`` wrapper exposing ``forward(x, mask=None)`` and
``out_dim(in_dim)``. Outputs are not L2-normalised: the network does that afterwards. In a padded
batch every image sits at the top-left and padding fills the bottom/right, so the regional
poolings (R-MAC family, NeuralCodes) rely on the valid part of each sample being a top-left
rectangle; the global ones (MAC, SPoC, GeM, CroW) accept any mask.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (y0, x0, height, width) of a region of the feature map, in feature-map cells.
Region = tuple[int, int, int, int]

# R-MAC: target overlap between neighbouring regions, and the candidate numbers k of extra
# regions along the long side of a non-square map (cirtorch tries 2..7 regions at level 1).
_RMAC_OVERLAP = 0.4
_RMAC_EXTRA_STEPS = np.arange(1, 7, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# input checks and mask helpers
# ----------------------------------------------------------------------------------------------


def _check_input(x: Tensor, mask: Tensor | None) -> None:
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
    _check_input(x, mask)
    if mask is None:
        return x.amax(dim=(-2, -1))
    _valid_counts(mask)
    return x.masked_fill(~mask[:, None], float("-inf")).amax(dim=(-2, -1))


def spoc(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum-pooled convolutional features, as a mean over the valid positions (B x C)."""
    _check_input(x, mask)
    if mask is None:
        return x.mean(dim=(-2, -1))
    counts = _valid_counts(mask)
    return x.masked_fill(~mask[:, None], 0.0).sum(dim=(-2, -1)) / counts


def _check_p(p: float | Tensor, channels: int) -> None:
    """Raise ValueError unless p is a number >= 1, a scalar tensor or one p per channel."""
    if isinstance(p, Tensor):
        if p.dim() > 0 and tuple(p.shape) != (channels,):
            raise ValueError(
                f"GeM p must be a number, a scalar tensor or one p per channel (shape ({channels},)"
                f" for this map), got a tensor of shape {tuple(p.shape)}"
            )
    elif p < 1:
        raise ValueError(f"GeM p must be >= 1 (p=1 is SPoC, p -> inf is MAC), got p={p}")


def gem(
    x: Tensor, p: float | Tensor = 3.0, eps: float = 1e-6, mask: Tensor | None = None
) -> Tensor:
    """GeM: (mean over valid positions of max(x, eps)^p)^(1/p); p scalar or one per channel."""
    _check_input(x, mask)
    _check_p(p, x.shape[1])
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
    _check_input(x, mask)
    if a <= 0 or b <= 0:
        raise ValueError(f"CroW exponents a and b must be > 0, got a={a}, b={b}")
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


def _check_levels(levels: int) -> None:
    """Raise ValueError unless levels is an int >= 1."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"regional pooling: levels must be an int >= 1, got {levels!r}")


def _regional(
    x: Tensor,
    pool: Callable[[Tensor], Tensor],
    levels: int,
    eps: float,
    mask: Tensor | None,
) -> Tensor:
    """Sum of L2-normalised pool() vectors of the whole map and of every R-MAC region."""
    _check_input(x, mask)
    _check_levels(levels)

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
    _check_input(x, mask)
    _check_p(p, x.shape[1])
    return _regional(x, lambda t: gem(t, p=p, eps=eps), levels, eps, mask)


def rspoc(x: Tensor, levels: int = 3, eps: float = 1e-6, mask: Tensor | None = None) -> Tensor:
    """Regional SPoC: R-MAC with the mean instead of max in each region."""
    return _regional(x, lambda t: t.mean(dim=(-2, -1)), levels, eps, mask)


def grid_max(x: Tensor, grid: tuple[int, int], mask: Tensor | None = None) -> Tensor:
    """Adaptive max pool of each valid map to grid (gh, gw), flattened to B x (C * gh * gw).

    On AlexNet/VGG trunks (cut before their last max-pool) this is exactly torchvision's last
    max-pool followed by its adaptive average pool at 224 px, the input of fc6.
    """
    _check_input(x, mask)

    def pool(t: Tensor) -> Tensor:
        return F.adaptive_max_pool2d(t, grid).flatten(1)

    return pool(x) if mask is None else _per_valid_size(x, mask, pool)


# ----------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------


def _p_parameter(p: float, learn_p: bool, per_channel: int | None) -> nn.Parameter:
    """Validated GeM exponent as a parameter: a scalar, or one value per channel."""
    if isinstance(p, bool) or not isinstance(p, int | float) or p < 1:
        raise ValueError(f"GeM p must be a number >= 1 (p=1 is SPoC, p -> inf is MAC), got p={p!r}")
    if per_channel is None:
        value = torch.tensor(float(p))
    elif isinstance(per_channel, bool) or not isinstance(per_channel, int) or per_channel < 1:
        raise ValueError(
            f"GeM per_channel must be the number of channels (an int >= 1) or None, "
            f"got {per_channel!r}"
        )
    else:
        value = torch.full((per_channel,), float(p))
    return nn.Parameter(value, requires_grad=learn_p)


def _check_channels(module: nn.Module, p: Tensor, in_dim: int) -> None:
    """Raise ValueError if a per-channel p does not match the number of channels."""
    if p.dim() == 1 and p.numel() != in_dim:
        raise ValueError(
            f"{type(module).__name__} was built with per-channel p for {p.numel()} channels but "
            f"the feature map has {in_dim}; set per_channel={in_dim}"
        )


class MAC(nn.Module):
    """Module form of mac()."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return mac(x, mask=mask)

    def out_dim(self, in_dim: int) -> int:
        """Descriptor size for a map with in_dim channels."""
        return in_dim

    def extra_repr(self) -> str:
        """No settings to show."""
        return ""


class SPoC(MAC):
    """Module form of spoc()."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return spoc(x, mask=mask)


class GeM(nn.Module):
    """Module form of gem() with a (learnable) exponent `p`, scalar or one per channel.

    The learned p is clamped to >= 1 when used; `p` holds the raw parameter for logging.
    """

    def __init__(
        self,
        p: float = 3.0,
        learn_p: bool = True,
        per_channel: int | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.p = _p_parameter(p, learn_p, per_channel)
        self.eps = eps

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        if x.dim() == 4:
            _check_channels(self, self.p, x.shape[1])
        return gem(x, p=self.p.clamp(min=1.0), eps=self.eps, mask=mask)

    def out_dim(self, in_dim: int) -> int:
        """Descriptor size for a map with in_dim channels."""
        _check_channels(self, self.p, in_dim)
        return in_dim

    def extra_repr(self) -> str:
        """Current p (mean if per channel), whether it learns, and eps."""
        p = self.p.detach()
        shown = f"p={p.item():.4f}" if p.dim() == 0 else f"p=mean {p.mean().item():.4f}"
        per_channel = f", per_channel={p.numel()}" if p.dim() == 1 else ""
        return f"{shown}{per_channel}, learn_p={self.p.requires_grad}, eps={self.eps}"


class RMAC(nn.Module):
    """Module form of rmac()."""

    def __init__(self, levels: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        _check_levels(levels)
        self.levels = levels
        self.eps = eps

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return rmac(x, levels=self.levels, eps=self.eps, mask=mask)

    def out_dim(self, in_dim: int) -> int:
        """Descriptor size for a map with in_dim channels."""
        return in_dim

    def extra_repr(self) -> str:
        """Number of levels and eps."""
        return f"levels={self.levels}, eps={self.eps}"


class RSPoC(RMAC):
    """Module form of rspoc()."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return rspoc(x, levels=self.levels, eps=self.eps, mask=mask)


class RGeM(RMAC):
    """Module form of rgem() with a (learnable) scalar exponent `p`, clamped to >= 1 when used."""

    def __init__(
        self, p: float = 3.0, levels: int = 3, learn_p: bool = True, eps: float = 1e-6
    ) -> None:
        super().__init__(levels=levels, eps=eps)
        self.p = _p_parameter(p, learn_p, None)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return rgem(x, p=self.p.clamp(min=1.0), levels=self.levels, eps=self.eps, mask=mask)

    def extra_repr(self) -> str:
        """Current p, whether it learns, levels and eps."""
        return f"p={self.p.item():.4f}, learn_p={self.p.requires_grad}, {super().extra_repr()}"


class CroW(nn.Module):
    """Module form of crow()."""

    def __init__(self, a: float = 2.0, b: float = 2.0, eps: float = 1e-6) -> None:
        super().__init__()
        if a <= 0 or b <= 0:
            raise ValueError(f"CroW exponents a and b must be > 0, got a={a}, b={b}")
        self.a, self.b, self.eps = a, b, eps

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return crow(x, a=self.a, b=self.b, eps=self.eps, mask=mask)

    def out_dim(self, in_dim: int) -> int:
        """Descriptor size for a map with in_dim channels."""
        return in_dim

    def extra_repr(self) -> str:
        """Exponents and eps."""
        return f"a={self.a}, b={self.b}, eps={self.eps}"


def _linear_size(head: nn.Module, attr: str) -> int | None:
    """head.<attr>, else that of its first (in_features) or last (out_features) nn.Linear."""
    if isinstance(getattr(head, attr, None), int):
        return getattr(head, attr)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    return getattr(linears[0] if attr == "in_features" else linears[-1], attr)


class NeuralCodes(nn.Module):
    """Neural codes (Babenko et al. ECCV'14): max-pool the valid map to a grid, then a head.

    `head` maps the flattened C * gh * gw vector to the code (the fc6/fc7 layers of AlexNet/VGG);
    its output size is `out_dim` if given, else `head.out_features`, else that of the head's last
    nn.Linear (so an nn.Sequential of Linear/ReLU/Dropout layers works as is).
    """

    def __init__(self, head: nn.Module, grid: tuple[int, int], out_dim: int | None = None) -> None:
        super().__init__()
        grid = tuple(grid)
        if len(grid) != 2 or any(isinstance(g, bool) or not isinstance(g, int) for g in grid):
            raise ValueError(f"NeuralCodes grid must be two ints (gh, gw), got {grid!r}")
        if min(grid) < 1:
            raise ValueError(f"NeuralCodes grid sizes must be >= 1, got {grid!r}")
        out_features = out_dim if out_dim is not None else _linear_size(head, "out_features")
        if not isinstance(out_features, int) or out_features < 1:
            raise ValueError(
                f"NeuralCodes cannot tell the head's output size (got {out_features!r}): give "
                "the head an int `out_features` attribute or pass out_dim=..."
            )
        self.head = head
        self.grid: tuple[int, int] = grid
        self.out_features = out_features

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x out_features."""
        return self.head(grid_max(x, self.grid, mask=mask))

    def out_dim(self, in_dim: int) -> int:
        """Code size; checks in_dim * gh * gw against the head's in_features when it has one."""
        flat = in_dim * self.grid[0] * self.grid[1]
        expected = _linear_size(self.head, "in_features")
        if isinstance(expected, int) and expected != flat:
            raise ValueError(
                f"NeuralCodes head expects {expected} inputs but a {in_dim}-channel map pooled to "
                f"grid {self.grid} gives {flat}; change the grid or the head"
            )
        return self.out_features

    def extra_repr(self) -> str:
        """Grid and code size."""
        return f"grid={self.grid}, out_features={self.out_features}"


POOLINGS: dict[str, type[nn.Module]] = {
    "mac": MAC,
    "spoc": SPoC,
    "gem": GeM,
    "rmac": RMAC,
    "rgem": RGeM,
    "rspoc": RSPoC,
    "crow": CroW,
    "neural_codes": NeuralCodes,
}


def build_pooling(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the pooling registered under `name` with keyword arguments."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; valid names: {', '.join(POOLINGS)}")
    cls = POOLINGS[name]
    signature = inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"pooling {name!r} cannot take arguments {sorted(kwargs)} ({err}); "
            f"it accepts {list(signature.parameters)}"
        ) from None
    return cls(**kwargs)


import retrieval.models.bow  # noqa: E402, F401  (registers the soft BoW pooling as "bow")
