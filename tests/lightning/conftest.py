"""Fixtures of the Lightning layer's tests: one small synthetic world for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.data.synthetic import SyntheticConfig, ensure_world

# 8 training and 4 validation landmarks, 6 views each, at 96 px (the pinned tuples assume it).
SMALL_WORLD = SyntheticConfig(
    n_train_landmarks=8,
    n_val_landmarks=4,
    n_test_landmarks=2,
    views_per_landmark=6,
    queries_per_landmark=2,
    max_side=96,
)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small world, generated once per session (it takes most of a minute on a busy CPU)."""
    return ensure_world(tmp_path_factory.getbasetemp() / "lightning-world", SMALL_WORLD)
