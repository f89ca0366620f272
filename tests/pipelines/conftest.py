"""Fixtures of the pipeline tests: train.yaml composed as the entry point would compose it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def compose_train() -> Callable[..., DictConfig]:
    """compose_train(*overrides): conf/train.yaml with overrides, without its hydra node."""

    def composed(*overrides: str) -> DictConfig:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.run_dir = "/tmp/retrieval-test-run"
            del cfg["hydra"]
        return cfg

    return composed
