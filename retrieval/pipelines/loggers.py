"""Loggers selected in the `logger` config group."""

from __future__ import annotations

import os
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Instantiate the selected loggers; W&B goes offline without an API key."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        logger_cfg = OmegaConf.to_container(logger_cfg, resolve=True)
        if name == "wandb":
            offline = logger_cfg.pop("offline", "auto")
            if offline == "auto":
                offline = not os.environ.get("WANDB_API_KEY")
            logger_cfg["offline"] = bool(offline)
            logger_cfg["config"] = OmegaConf.to_container(cfg, resolve=True)
        loggers.append(hydra.utils.instantiate(logger_cfg))
    return loggers
