"""A GPU trainer on a machine without one: train on the CPU with a warning, or say what to use."""

from __future__ import annotations

import warnings

import torch
from omegaconf import DictConfig, open_dict

from retrieval.pipelines.config import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")


def fall_back_to_cpu_without_gpu(cfg: DictConfig) -> None:
    """Switch a one-GPU trainer (trainer=gpu, experiment=cirtorch_r101_gem) to the CPU if no
    CUDA GPU is visible; refuse a multi-GPU one, naming trainer=ddp_cpu."""
    trainer = cfg.trainer
    if str(trainer.get("accelerator")) not in GPU_ACCELERATORS or torch.cuda.is_available():
        return
    if trainer.get("strategy") or trainer.get("devices") not in (None, 1):
        raise ConfigError(
            f"trainer.accelerator={trainer.accelerator} with trainer.devices="
            f"{trainer.get('devices')} needs CUDA GPUs, and none is visible "
            "(torch.cuda.is_available() is False). Use trainer=ddp_cpu for DDP on the CPU, "
            "or trainer=cpu."
        )
    changes = "trainer.accelerator=cpu"
    with open_dict(cfg):
        trainer.accelerator = "cpu"
        # Half precision is a GPU speed-up; on the CPU fp16 is unsupported and bf16 often slow.
        if str(trainer.get("precision")) != "32-true":
            trainer.precision = "32-true"
            changes += " trainer.precision=32-true"
    warnings.warn(
        "The trainer asks for a GPU (trainer=gpu, which experiment=cirtorch_r101_gem sets) but "
        "no CUDA GPU is visible (torch.cuda.is_available() is False): training on the CPU "
        f"instead ({changes}), far slower. Pass trainer=cpu to choose the CPU and silence this "
        "warning, or run on a machine with a CUDA GPU and a CUDA build of PyTorch.",
        UserWarning,
        stacklevel=2,
    )
