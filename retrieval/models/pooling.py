"""Pooling modules (B x C x h x w feature map -> B x D descriptor) and their registry, POOLINGS.

Each module wraps a pure function of :mod:`retrieval.models.functional` and answers the
:class:`Pooling` protocol, so the rest of the package asks a pooling for its behaviour instead of
reading its attributes or listing pooling names. Adding a pooling: a class here, an entry in
POOLINGS and a ``conf/pooling/NAME.yaml``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retrieval.models import functional as PF
from retrieval.models.functional import PoolingArgumentError

if TYPE_CHECKING:
    from retrieval.models.backbones import Backbone

DEFAULT_WORDS = 1024  # soft BoW codebook size without a vocabulary file


class Pooling(nn.Module):
    """Base of every pooling: ``forward(x, mask=None)`` plus what others ask of a pooling.

    The defaults fit a parameter-free pooling whose output has one value per channel.
    """

    def __init__(self) -> None:  # no arguments unless a pooling declares some
        super().__init__()

    @classmethod
    def check_args(cls, **args: Any) -> None:
        """Raise PoolingArgumentError for an argument out of range (start-up and __init__)."""

    @classmethod
    def for_backbone(cls, backbone: Backbone, **args: Any) -> Pooling:
        """The pooling on top of `backbone`; most need only their arguments."""
        return cls(**args)

    def rebuild_args(self, given: dict[str, Any]) -> dict[str, Any]:
        """Arguments that rebuild this pooling from a checkpoint's meta (default: as given)."""
        return given

    def out_dim(self, in_dim: int) -> int:
        """Descriptor size for a map with in_dim channels."""
        return in_dim

    def multiscale_exponent(self) -> float:
        """Exponent p of the mean of multi-scale descriptors, (mean d^p)^(1/p); 1: plain mean."""
        return 1.0

    def param_groups(self, lr: float, lr_mult: float) -> list[dict[str, Any]]:
        """Optimiser groups of its learnable weights: lr * lr_mult, no weight decay (cirtorch)."""
        learnable = [p for p in self.parameters() if p.requires_grad]
        if not learnable:
            return []
        return [{"params": learnable, "lr": lr * lr_mult, "weight_decay": 0.0, "name": "pooling"}]

    def training_logs(self) -> dict[str, Tensor]:
        """Values worth logging at each training step (e.g. GeM's p)."""
        return {}

    def activation(self, x: Tensor) -> Tensor:
        """h x w response behind this pooling of one non-negative C x h x w map (SPoC: sum_c x)."""
        return PF.sum_response(x)


# ----------------------------------------------------------------------------------------------
# global poolings
# ----------------------------------------------------------------------------------------------


class MAC(Pooling):
    """Module form of mac()."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return PF.mac(x, mask=mask)

    def activation(self, x: Tensor) -> Tensor:
        """The maxima each position wins."""
        return PF.max_votes(x)


class SPoC(Pooling):
    """Module form of spoc()."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return PF.spoc(x, mask=mask)


def _p_parameter(p: float, learn_p: bool, per_channel: int | None) -> nn.Parameter:
    """The GeM exponent as a parameter: a scalar, or one value per channel."""
    value = torch.tensor(float(p)) if per_channel is None else torch.full((per_channel,), float(p))
    return nn.Parameter(value, requires_grad=learn_p)


class GeM(Pooling):
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
        self.check_args(p=p, per_channel=per_channel)
        self.p = _p_parameter(p, learn_p, per_channel)
        self.eps = eps

    @classmethod
    def check_args(cls, p: float = 3.0, per_channel: int | None = None, **_: Any) -> None:
        """p a number >= 1; per_channel None or a number of channels."""
        PF.check_p(p)
        if per_channel is not None and (
            isinstance(per_channel, bool) or not isinstance(per_channel, int) or per_channel < 1
        ):
            raise PoolingArgumentError(
                "per_channel",
                f"GeM per_channel must be the number of channels (an int >= 1) or None, "
                f"got {per_channel!r}",
            )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        if x.dim() == 4:
            self._check_channels(x.shape[1])
        return PF.gem(x, p=self.p.clamp(min=1.0), eps=self.eps, mask=mask)

    def _check_channels(self, in_dim: int) -> None:
        """Raise ValueError if a per-channel p does not match the number of channels."""
        if self.p.dim() == 1 and self.p.numel() != in_dim:
            raise ValueError(
                f"{type(self).__name__} was built with per-channel p for {self.p.numel()} channels "
                f"but the feature map has {in_dim}; set per_channel={in_dim}"
            )

    def out_dim(self, in_dim: int) -> int:
        """Descriptor size for a map with in_dim channels."""
        self._check_channels(in_dim)
        return in_dim

    def multiscale_exponent(self) -> float:
        """The p GeM pools with (clamped to >= 1); 1 with a p per channel, as cirtorch's GeMmp."""
        if self.p.dim() == 1:  # cirtorch's test.py uses p for 'gem' only, the plain mean else
            return 1.0
        return float(self.p.detach().float().clamp(min=1.0))

    def training_logs(self) -> dict[str, Tensor]:
        """The raw learned p (its mean if per channel)."""
        return {"gem_p": self.p.detach().mean()}

    def activation(self, x: Tensor) -> Tensor:
        """Each position's share of the pooled sums, sum_c x^p."""
        return PF.power_response(x, self.p)

    def extra_repr(self) -> str:
        """Current p (mean if per channel), whether it learns, and eps."""
        p = self.p.detach()
        shown = f"p={p.item():.4f}" if p.dim() == 0 else f"p=mean {p.mean().item():.4f}"
        per_channel = f", per_channel={p.numel()}" if p.dim() == 1 else ""
        return f"{shown}{per_channel}, learn_p={self.p.requires_grad}, eps={self.eps}"


class CroW(Pooling):
    """Module form of crow()."""

    def __init__(self, a: float = 2.0, b: float = 2.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.check_args(a=a, b=b)
        self.a, self.b, self.eps = a, b, eps

    @classmethod
    def check_args(cls, a: float = 2.0, b: float = 2.0, **_: Any) -> None:
        """Both exponents > 0."""
        PF.check_crow_exponents(a, b)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return PF.crow(x, a=self.a, b=self.b, eps=self.eps, mask=mask)

    def extra_repr(self) -> str:
        """Exponents and eps."""
        return f"a={self.a}, b={self.b}, eps={self.eps}"


# ----------------------------------------------------------------------------------------------
# regional poolings (R-MAC family)
# ----------------------------------------------------------------------------------------------


class _Regional(Pooling):
    """Common settings of the R-MAC family: the number of levels of the grid and eps."""

    def __init__(self, levels: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        PF.check_levels(levels)
        self.levels = levels
        self.eps = eps

    @classmethod
    def check_args(cls, levels: int = 3, **_: Any) -> None:
        """levels an int >= 1."""
        PF.check_levels(levels)

    def extra_repr(self) -> str:
        """Number of levels and eps."""
        return f"levels={self.levels}, eps={self.eps}"


class RMAC(_Regional):
    """Module form of rmac()."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return PF.rmac(x, levels=self.levels, eps=self.eps, mask=mask)

    def activation(self, x: Tensor) -> Tensor:
        """The maxima each position wins."""
        return PF.max_votes(x)


class RSPoC(_Regional):
    """Module form of rspoc()."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return PF.rspoc(x, levels=self.levels, eps=self.eps, mask=mask)


class RGeM(_Regional):
    """Module form of rgem() with a (learnable) scalar exponent `p`, clamped to >= 1 when used.

    Its multi-scale mean stays plain: cirtorch averages with p for plain GeM only.
    """

    def __init__(
        self, p: float = 3.0, levels: int = 3, learn_p: bool = True, eps: float = 1e-6
    ) -> None:
        super().__init__(levels=levels, eps=eps)
        PF.check_p(p)
        self.p = _p_parameter(p, learn_p, None)

    @classmethod
    def check_args(cls, p: float = 3.0, levels: int = 3, **_: Any) -> None:
        """p a number >= 1; levels an int >= 1."""
        PF.check_p(p)
        PF.check_levels(levels)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x C."""
        return PF.rgem(x, p=self.p.clamp(min=1.0), levels=self.levels, eps=self.eps, mask=mask)

    def training_logs(self) -> dict[str, Tensor]:
        """The raw learned p."""
        return {"gem_p": self.p.detach().mean()}

    def activation(self, x: Tensor) -> Tensor:
        """Each position's share of the pooled sums, sum_c x^p."""
        return PF.power_response(x, self.p)

    def extra_repr(self) -> str:
        """Current p, whether it learns, levels and eps."""
        return f"p={self.p.item():.4f}, learn_p={self.p.requires_grad}, {super().extra_repr()}"


# ----------------------------------------------------------------------------------------------
# poolings with weights: neural codes (the classifier's fc layers), soft bag of words
# ----------------------------------------------------------------------------------------------


def _linear_size(head: nn.Module, attr: str) -> int | None:
    """head.<attr>, else that of its first (in_features) or last (out_features) nn.Linear."""
    if isinstance(getattr(head, attr, None), int):
        return getattr(head, attr)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    return getattr(linears[0] if attr == "in_features" else linears[-1], attr)


class NeuralCodes(Pooling):
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

    @classmethod
    def for_backbone(cls, backbone: Backbone, layer: str = "fc7") -> NeuralCodes:
        """The codes of the backbone's own classifier up to `layer` (fc6 or fc7)."""
        head, grid = backbone.classifier_head(layer)
        return cls(head, grid)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x out_features."""
        return self.head(PF.grid_max(x, self.grid, mask=mask))

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


def _load_vocabulary(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Centroids (K x C) and idf (K,) of a vocabulary .npz (see retrieval.local.bow.Vocabulary)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"BoW vocabulary not found: {path}; learn one with `python evaluate.py bow=true` "
            "(it writes vocabulary.npz in its run folder) or leave pooling.args.vocabulary null"
        )
    with np.load(path, allow_pickle=False) as data:
        return data["centroids"], data.get("idf")


def _initial_codebook(
    num_words: int | None, in_dim: int | None, vocabulary: str | None, seed: int
) -> tuple[Tensor, np.ndarray | None]:
    """The codebook (K x C) and idf: the vocabulary's, else seeded random words."""
    if vocabulary is None:
        num_words = DEFAULT_WORDS if num_words is None else num_words
        if in_dim is None or int(num_words) < 1 or int(in_dim) < 1:
            raise ValueError(
                f"BoW needs num_words and in_dim (>= 1) or a vocabulary file, got "
                f"num_words={num_words}, in_dim={in_dim}"
            )
        generator = torch.Generator().manual_seed(int(seed))
        return torch.randn(int(num_words), int(in_dim), generator=generator), None
    centroids, idf = _load_vocabulary(vocabulary)
    found = {"num_words": centroids.shape[0], "in_dim": centroids.shape[1]}
    for key, given in (("num_words", num_words), ("in_dim", in_dim)):
        if given is not None and int(given) != found[key]:
            raise ValueError(
                f"BoW {key}={given} but the vocabulary {vocabulary} has {found[key]} "
                "(in_dim is the backbone's width: learn the vocabulary with this "
                "backbone; num_words=null takes the vocabulary's)"
            )
    return torch.as_tensor(centroids, dtype=torch.float32), idf


class SoftBoW(Pooling):
    """Soft-assignment bag of words over local CNN features: soft_bow() with a learnable codebook.

    Every position of the map is a local descriptor, softly assigned to the K visual words
    (softmax of alpha * cosine), averaged over the valid positions (a soft term frequency) and
    weighted by the words' idf: as alpha grows, the hard tf-idf bag of words of
    :mod:`retrieval.local.bow`, made trainable like NetVLAD's soft assignment. The codebook starts
    from a vocabulary file (its idf too) or from seeded random unit vectors; it and the idf live
    in the state dict, so a checkpoint rebuilds it without the file. `num_words` and `in_dim`
    default to the vocabulary's shape, or to DEFAULT_WORDS random words of the backbone's width.
    """

    def __init__(
        self,
        num_words: int | None = None,
        in_dim: int | None = None,
        vocabulary: str | None = None,
        alpha: float = 30.0,
        learn_codebook: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.check_args(alpha=alpha)
        codebook, idf = _initial_codebook(num_words, in_dim, vocabulary, seed)
        self.codebook = nn.Parameter(F.normalize(codebook, dim=1), requires_grad=learn_codebook)
        ones = torch.ones(len(codebook))
        self.register_buffer("idf", ones if idf is None else torch.as_tensor(idf).float())
        self.alpha = float(alpha)
        self.seed = int(seed)

    @classmethod
    def check_args(cls, alpha: float = 30.0, **_: Any) -> None:
        """alpha (the assignment sharpness) > 0."""
        if alpha <= 0:
            raise PoolingArgumentError(
                "alpha", f"BoW alpha (assignment sharpness) must be > 0, got {alpha}"
            )

    @classmethod
    def for_backbone(cls, backbone: Backbone, **args: Any) -> SoftBoW:
        """Words of the backbone's width unless `in_dim` is given."""
        if args.get("in_dim") in (None, "auto"):
            args = {**args, "in_dim": backbone.out_dim}
        return cls(**args)

    def rebuild_args(self, given: dict[str, Any]) -> dict[str, Any]:
        """Arguments that rebuild this module's shape without the vocabulary file."""
        num_words, in_dim = self.codebook.shape
        return {
            "num_words": int(num_words),
            "in_dim": int(in_dim),
            "vocabulary": None,
            "alpha": self.alpha,
            "learn_codebook": bool(self.codebook.requires_grad),
            "seed": self.seed,
        }

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x K."""
        return PF.soft_bow(x, self.codebook, alpha=self.alpha, idf=self.idf, mask=mask)

    def out_dim(self, in_dim: int) -> int:
        """Descriptor size (the number of words); checks the codebook's width."""
        if in_dim != self.codebook.shape[1]:
            raise ValueError(
                f"BoW codebook has {self.codebook.shape[1]} channels but the backbone gives "
                f"{in_dim}; learn the vocabulary with this backbone"
            )
        return int(self.codebook.shape[0])

    def extra_repr(self) -> str:
        """Words, channels and alpha."""
        num_words, in_dim = self.codebook.shape
        return f"num_words={num_words}, in_dim={in_dim}, alpha={self.alpha}"


# ----------------------------------------------------------------------------------------------
# registry: one entry per `name` of conf/pooling/*.yaml
# ----------------------------------------------------------------------------------------------

POOLINGS: dict[str, type[Pooling]] = {
    "mac": MAC,
    "spoc": SPoC,
    "gem": GeM,
    "rmac": RMAC,
    "rgem": RGeM,
    "rspoc": RSPoC,
    "crow": CroW,
    "neural_codes": NeuralCodes,
    "bow": SoftBoW,
}


def _pooling_class(name: str) -> type[Pooling]:
    """The class registered under `name`, or a ValueError listing the valid names."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; valid names: {', '.join(POOLINGS)}")
    return POOLINGS[name]


def _check_signature(name: str, signature: inspect.Signature, kwargs: dict[str, Any]) -> None:
    """Raise ValueError naming the accepted arguments if kwargs do not fit `signature`."""
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        given = sorted(k for k in kwargs if k != "backbone")
        accepted = [p for p in signature.parameters if p != "backbone"]
        raise ValueError(
            f"pooling {name!r} cannot take arguments {given} ({err}); it accepts {accepted}"
        ) from None


def build_pooling(name: str, **kwargs: Any) -> Pooling:
    """Instantiate the pooling registered under `name` with keyword arguments."""
    cls = _pooling_class(name)
    _check_signature(name, inspect.signature(cls), kwargs)
    return cls(**kwargs)


def pooling_for_backbone(name: str, backbone: Backbone, args: dict[str, Any]) -> Pooling:
    """The pooling `name` built with `args` on top of `backbone` (as a network builds it)."""
    cls = _pooling_class(name)
    builder = inspect.signature(cls.for_backbone)
    if any(p.kind is p.VAR_KEYWORD for p in builder.parameters.values()):
        # for_backbone(backbone, **args) hands the arguments on to the constructor
        _check_signature(name, inspect.signature(cls), args)
    else:
        _check_signature(name, builder, {"backbone": backbone, **args})
    return cls.for_backbone(backbone, **args)


def check_pooling_args(name: str, args: dict[str, Any]) -> None:
    """Check a pooling's argument values before anything is built (PoolingArgumentError)."""
    _pooling_class(name).check_args(**args)
