"""Soft-assignment bag of words over local CNN features: a differentiable pooling (``bow``).

Every position of the feature map is a local descriptor x (L2-normalised); it is assigned to
the K visual words c_k (L2-normalised rows of a learnable codebook) with weights
softmax_k(alpha * <x, c_k>), the weights are averaged over the valid positions (a soft term
frequency) and multiplied by the words' idf. After the network's L2 normalisation two
descriptors compare as the cosine of their tf-idf vectors: as alpha grows, this is the hard
tf-idf bag of words of :mod:`retrieval.local.bow` (Sivic & Zisserman 2003 on CNN features, as in
Mohedano et al. ICMR'16), made trainable like NetVLAD's soft assignment.

The codebook (K x C) starts from a vocabulary file (``vocabulary=PATH``: the ``.npz`` written
by :class:`retrieval.local.bow.Vocabulary`, whose idf it also takes) or from seeded random unit
vectors; it is a parameter and lives in the state dict, as the idf buffer does, so a checkpoint
rebuilds it without the file. The output dimension is K.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retrieval.models.pooling import POOLINGS, _check_input, spoc

DEFAULT_WORDS = 1024  # codebook size without a vocabulary file


def soft_bow(
    x: Tensor,
    codebook: Tensor,
    alpha: float = 30.0,
    idf: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Soft tf(-idf) histogram (B x K) of a B x C x h x w map over a K x C codebook."""
    _check_input(x, mask)
    if codebook.dim() != 2 or codebook.shape[1] != x.shape[1]:
        raise ValueError(
            f"soft_bow: codebook must be K x C with C={x.shape[1]} channels, got shape "
            f"{tuple(codebook.shape)}"
        )
    words = F.normalize(codebook, dim=1)
    logits = alpha * torch.einsum("bchw,kc->bkhw", F.normalize(x, dim=1), words)
    tf = spoc(logits.softmax(dim=1), mask=mask)  # mean soft counts over the valid positions
    return tf if idf is None else tf * idf


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


class SoftBoW(nn.Module):
    """Module form of soft_bow() with a learnable codebook (and a fixed idf buffer).

    `num_words` and `in_dim` default to the vocabulary's shape, or to DEFAULT_WORDS random
    words of the backbone's width (``build_net`` fills `in_dim`) without a vocabulary.
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
        if alpha <= 0:
            raise ValueError(f"BoW alpha (assignment sharpness) must be > 0, got {alpha}")
        idf = None
        if vocabulary is not None:
            centroids, idf = _load_vocabulary(vocabulary)
            found = {"num_words": centroids.shape[0], "in_dim": centroids.shape[1]}
            for key, given in (("num_words", num_words), ("in_dim", in_dim)):
                if given is not None and int(given) != found[key]:
                    raise ValueError(
                        f"BoW {key}={given} but the vocabulary {vocabulary} has {found[key]} "
                        "(in_dim is the backbone's width: learn the vocabulary with this "
                        "backbone; num_words=null takes the vocabulary's)"
                    )
            codebook = torch.as_tensor(centroids, dtype=torch.float32)
        else:
            num_words = DEFAULT_WORDS if num_words is None else num_words
            if in_dim is None or int(num_words) < 1 or int(in_dim) < 1:
                raise ValueError(
                    f"BoW needs num_words and in_dim (>= 1) or a vocabulary file, got "
                    f"num_words={num_words}, in_dim={in_dim}"
                )
            generator = torch.Generator().manual_seed(int(seed))
            codebook = torch.randn(int(num_words), int(in_dim), generator=generator)
        self.codebook = nn.Parameter(F.normalize(codebook, dim=1), requires_grad=learn_codebook)
        ones = torch.ones(len(codebook))
        self.register_buffer("idf", ones if idf is None else torch.as_tensor(idf).float())
        self.alpha = float(alpha)
        self.seed = int(seed)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool a B x C x h x w map to B x K."""
        return soft_bow(x, self.codebook, alpha=self.alpha, idf=self.idf, mask=mask)

    def out_dim(self, in_dim: int) -> int:
        """Descriptor size (the number of words); checks the codebook's width."""
        if in_dim != self.codebook.shape[1]:
            raise ValueError(
                f"BoW codebook has {self.codebook.shape[1]} channels but the backbone gives "
                f"{in_dim}; learn the vocabulary with this backbone"
            )
        return int(self.codebook.shape[0])

    def rebuild_args(self) -> dict[str, object]:
        """Arguments that rebuild this module's shape without the vocabulary file (net meta)."""
        num_words, in_dim = self.codebook.shape
        return {
            "num_words": int(num_words),
            "in_dim": int(in_dim),
            "vocabulary": None,
            "alpha": self.alpha,
            "learn_codebook": bool(self.codebook.requires_grad),
            "seed": self.seed,
        }

    def extra_repr(self) -> str:
        """Words, channels and alpha."""
        num_words, in_dim = self.codebook.shape
        return f"num_words={num_words}, in_dim={in_dim}, alpha={self.alpha}"


# Registered here, not in pooling.py's dict literal: pooling.py imports this module at its end,
# so the registry holds "bow" whichever of the two is imported first.
POOLINGS["bow"] = SoftBoW
