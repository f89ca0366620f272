"""Loggers selected in the `logger` config group."""

from __future__ import annotations

import logging
import netrc
import os
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
WANDB_HOST = "https://api.wandb.ai"


def hydra_overrides() -> list[str]:
    """The running Hydra job's command-line overrides (none outside a Hydra job)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _override_key(override: Override) -> str:
    """The config key an override sets, whatever its prefix (+, ++, ~) or value."""
    package = f"@{override.package}" if override.package is not None else ""
    return f"{override.key_or_group}{package}"


def run_name(
    job_overrides: Sequence[str], sweep_overrides: Sequence[str] | None = None, fallback: str = ""
) -> str:
    """A run's readable name: in a sweep (`sweep_overrides`: its command line), the job's overrides
    of the keys the sweep varies; alone, its overrides but the logger choice; else `fallback`."""
    parse = OverridesParser.create().parse_overrides
    job = parse(list(job_overrides))
    if sweep_overrides is not None:
        sweep = parse(list(sweep_overrides))
        fixed = {_override_key(o) for o in sweep if not o.is_sweep_override()}
    else:
        fixed = {"logger"}  # where a run is logged says nothing about the run
    return " ".join(o.input_line for o in job if _override_key(o) not in fixed) or fallback


def _sweep_command_line(sweep_dir: Path) -> list[str] | None:
    """The sweep's command-line overrides, from the multirun.yaml Hydra writes before any job."""
    try:
        return list(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task)
    except (OSError, AttributeError, ValueError) as err:  # missing, or not Hydra's file
        log.debug("no multirun.yaml under %s (%s): runs named by all overrides", sweep_dir, err)
        return None


def run_group_and_name() -> tuple[str | None, str | None]:
    """A sweep's runs share its directory as group and are named by what the sweep varies; a
    single run is named by its overrides, or `train (defaults)` without any."""
    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_dir = Path(str(hydra_cfg.sweep.dir))
        name = run_name(overrides, _sweep_command_line(sweep_dir), f"job {hydra_cfg.job.num}")
        return str(sweep_dir), name
    return None, run_name(overrides, fallback=f"{hydra_cfg.job.name} (defaults)")


def _has_wandb_key(host: str) -> bool:
    """An API key in the environment or in the netrc file that `wandb login` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def wandb_offline(setting: Any = "auto") -> bool:
    """Whether W&B runs offline: as set, or (auto) without an API key or without network."""
    if setting != "auto":
        return bool(setting)
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        return True
    url = urlsplit(os.environ.get("WANDB_BASE_URL", WANDB_HOST))
    host, port = url.hostname or "", url.port or (80 if url.scheme == "http" else 443)
    reason = None
    if not _has_wandb_key(host):
        reason = "no API key"
    elif not _reachable(host, port):
        reason = f"{host} unreachable"
    if reason:
        log.info(
            "W&B runs offline (%s); upload later with `wandb sync RUN/wandb/offline-run-*`", reason
        )
    return reason is not None


def finish_loggers(loggers: Sequence[Any]) -> None:
    """End the W&B runs of these loggers (Lightning leaves them open; a sweep starts new ones)."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Instantiate the selected loggers; W&B goes offline without an API key or network, gets
    the resolved config as its run config, a sweep's directory as group, what varies as name."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        kwargs = OmegaConf.to_container(logger_cfg, resolve=True)
        if name == "wandb":
            kwargs["offline"] = wandb_offline(kwargs.pop("offline", "auto"))
            # Passed past hydra.utils.instantiate, which would build the trainer and loggers
            # that the run config describes (their `_target_`s).
            kwargs["config"] = OmegaConf.to_container(cfg, resolve=True)
            group, run_name = run_group_and_name()
            kwargs["group"] = kwargs.get("group") or group
            kwargs["name"] = kwargs.get("name") or run_name
        loggers.append(hydra.utils.get_class(kwargs.pop("_target_"))(**kwargs))
    return loggers


def log_final_results(
    cfg: DictConfig, figures: dict[str, float], pictures: dict[str, Path]
) -> None:
    """A finished job's figures and PNG pictures to its configured loggers, their runs ended
    (the pictures go to the loggers that show images: W&B, TensorBoard)."""
    from retrieval.lightning.pictures import log_pictures

    loggers = build_loggers(cfg)
    for logger in loggers:
        logger.log_metrics(figures)
    log_pictures(loggers, pictures, step=0)
    for logger in loggers:
        logger.finalize("success")
    finish_loggers(loggers)  # a sweep's next job starts a new W&B run


class _DropLitLoggerTip(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger (every Trainer prints it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def silence_lightning_noise() -> None:
    """Hide two messages every run printed that say nothing about the run (issue 18), only those."""
    rank_zero_logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLitLoggerTip) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_DropLitLoggerTip())
    # Lightning's own _pytree helper uses a torch API torch now deprecates: nothing a user can fix.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
