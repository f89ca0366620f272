"""One epoch's mined tuples (query, positive, negatives) and their on-disk format (``.npz``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from retrieval.atomic import atomic_write


def _to_numpy(values: Any, dtype: Any) -> np.ndarray:
    """Tensor (any device) or array-like as a numpy array of ``dtype``."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


@dataclass
class EpochTuples:
    """One epoch's tuples: image indices of queries, positives and negatives, and similarities."""

    query: np.ndarray  # Q image indices
    positive: np.ndarray  # Q image indices
    negatives: np.ndarray  # Q x nnum image indices
    neg_sims: np.ndarray | None = None  # Q x nnum query-negative similarities at mining time
    pos_sims: np.ndarray | None = None  # Q query-positive similarities at mining time
    epoch: int | None = None
    cids: list[str] | None = None  # image ids the indices refer to

    def __post_init__(self) -> None:
        self.query = _to_numpy(self.query, np.int64).reshape(-1)
        self.positive = _to_numpy(self.positive, np.int64).reshape(-1)
        self.negatives = _to_numpy(self.negatives, np.int64)
        num = self.query.size
        if self.negatives.ndim == 1 and num:
            self.negatives = self.negatives.reshape(num, -1)
        if self.positive.size != num or self.negatives.ndim != 2 or self.negatives.shape[0] != num:
            raise ValueError(
                f"EpochTuples needs Q queries, Q positives and Q x nnum negatives; got "
                f"{num}, {self.positive.size} and shape {self.negatives.shape}."
            )
        if self.neg_sims is not None:
            self.neg_sims = _to_numpy(self.neg_sims, np.float32).reshape(self.negatives.shape)
        if self.pos_sims is not None:
            self.pos_sims = _to_numpy(self.pos_sims, np.float32).reshape(num)
        if self.cids is not None:
            self.cids = [str(c) for c in self.cids]

    def __len__(self) -> int:
        return int(self.query.size)

    @property
    def nnum(self) -> int:
        """Negatives per tuple."""
        return int(self.negatives.shape[1])

    def image_indices(self, i: int) -> list[int]:
        """Image indices of tuple ``i``: query, positive, then its negatives."""
        return [int(self.query[i]), int(self.positive[i]), *(int(n) for n in self.negatives[i])]

    def save(self, path: str | Path) -> None:
        """Write to ``path`` as an uncompressed ``.npz`` (no pickle), atomically."""
        arrays: dict[str, np.ndarray] = {
            "query": self.query,
            "positive": self.positive,
            "negatives": self.negatives,
        }
        for key in ("neg_sims", "pos_sims"):
            if getattr(self, key) is not None:
                arrays[key] = getattr(self, key)
        if self.epoch is not None:
            arrays["epoch"] = np.asarray(self.epoch, dtype=np.int64)
        if self.cids is not None:
            arrays["cids"] = np.asarray(self.cids, dtype=np.str_)
        atomic_write(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> EpochTuples:
        """Read tuples written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Epoch tuples file not found: {path}.")
        with np.load(path, allow_pickle=False) as data:
            missing = {"query", "positive", "negatives"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not an EpochTuples file: missing {sorted(missing)}.")
            return cls(
                query=data["query"],
                positive=data["positive"],
                negatives=data["negatives"],
                neg_sims=data["neg_sims"] if "neg_sims" in data.files else None,
                pos_sims=data["pos_sims"] if "pos_sims" in data.files else None,
                epoch=int(data["epoch"]) if "epoch" in data.files else None,
                cids=data["cids"].tolist() if "cids" in data.files else None,
            )
