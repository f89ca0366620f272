"""What a synthetic world is: its parameters, their checks, its names and its identity (hash)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

VERSION = 1
SFM_NAME = "synthetic-sfm"
TEST_NAME = "synthetic-rox"
LABELS_NAME = "synthetic-labels"
UKBENCH_NAME = "synthetic-ukbench"


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic world (all but ``workers`` define its identity)."""

    seed: int = 0
    n_train_landmarks: int = 80
    n_val_landmarks: int = 10
    n_test_landmarks: int = 20
    views_per_landmark: int = 20
    queries_per_landmark: int = 3
    max_side: int = 256
    points_per_landmark: int = 1200
    positive_min_overlap: float = 0.2
    positive_max_scale: float = 1.5
    workers: int = 0  # processes; 0: one per available core. Does not change the output.

    def __post_init__(self) -> None:
        minimum = {
            "n_train_landmarks": 1,
            "n_val_landmarks": 0,
            "n_test_landmarks": 1,
            "views_per_landmark": 2,
            "queries_per_landmark": 1,
            "max_side": 32,
            "points_per_landmark": 50,
            "workers": 0,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(
                    f"synthetic world: {name} must be an integer >= {low}, got {value!r}"
                )
        if not 0 < self.positive_min_overlap <= 1 or self.positive_max_scale < 1:
            raise ValueError(
                "synthetic world: positive_min_overlap must be in (0, 1] and "
                "positive_max_scale >= 1"
            )

    def params(self) -> dict[str, Any]:
        """The parameters that define the world's content."""
        return {k: v for k, v in asdict(self).items() if k != "workers"}

    def key(self) -> str:
        """Short hash of the parameters and generator version."""
        text = json.dumps({"version": VERSION, **self.params()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def as_config(config: SyntheticConfig | Mapping[str, Any] | None) -> SyntheticConfig:
    """A SyntheticConfig from None (defaults), a mapping of its fields or a config."""
    if config is None:
        return SyntheticConfig()
    if isinstance(config, SyntheticConfig):
        return config
    known = {f.name for f in fields(SyntheticConfig)}
    unknown = set(config) - known
    if unknown:
        raise ValueError(
            f"unknown synthetic world parameter(s) {sorted(unknown)}; valid: {sorted(known)}"
        )
    return SyntheticConfig(**dict(config))
