"""The trainer's device and precision: a GPU trainer on a machine without one falls back to the
CPU (with a warning) or says what to use; `trainer.precision=auto` is measured on the machine."""

from __future__ import annotations

import logging
import warnings

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from retrieval.extraction import precision_probe
from retrieval.extraction.inference import resolve_precision
from retrieval.pipelines.config import ConfigError

log = logging.getLogger(__name__)

GPU_ACCELERATORS = ("gpu", "cuda")
# resolve_precision's answer -> Lightning's name of the same training precision.
LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


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
        # A GPU's half precision may not pay on this CPU (fp16 never does): let it be measured.
        if str(trainer.get("precision")) not in ("32-true", "32", "auto"):
            trainer.precision = "auto"
            changes += " trainer.precision=auto"
    warnings.warn(
        "The trainer asks for a GPU (trainer=gpu, which experiment=cirtorch_r101_gem sets) but "
        "no CUDA GPU is visible (torch.cuda.is_available() is False): training on the CPU "
        f"instead ({changes}), far slower. Pass trainer=cpu to choose the CPU and silence this "
        "warning, or run on a machine with a CUDA GPU and a CUDA build of PyTorch.",
        UserWarning,
        stacklevel=2,
    )


def trainer_device_type(cfg: DictConfig) -> str:
    """'cuda' when the configured trainer trains on a visible GPU, else 'cpu'."""
    accelerator = str(cfg.trainer.get("accelerator"))
    gpu = accelerator in (*GPU_ACCELERATORS, "auto") and torch.cuda.is_available()
    return "cuda" if gpu else "cpu"


def resolve_trainer_precision(
    cfg: DictConfig, net: nn.Module, timer: precision_probe.Timer | None = None
) -> str:
    """Make `trainer.precision=auto` concrete (in `cfg`) and return it; other values stay.

    auto: what `resolve_precision` measures for a training step of `net` on the trainer's
    device: "bf16-mixed" where bf16 runs the step faster within round-off, else "32-true"
    (GPUs: bf16-mixed, or 16-mixed without bf16). Loss and GeM's p stay fp32 either way.
    """
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision != "auto":
        return precision
    device = trainer_device_type(cfg)
    chosen = LIGHTNING_PRECISION[resolve_precision("auto", device, net, "training", timer)]
    with open_dict(cfg):
        cfg.trainer.precision = chosen
    log.info("trainer.precision=auto on %s: %s", device, chosen)
    return chosen
