"""Train a retrieval network: `python train.py [group=option ...]` (see conf/train.yaml)."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from retrieval.pipelines.report import print_before_after
from retrieval.pipelines.train import run_training

log = logging.getLogger("train")


def log_failure_to_run_log() -> None:
    """The error being handled, with its traceback, into RUN/train.log (Hydra's file handler)."""
    # The console shows Hydra's own error report already: only the file handlers get this one.
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "training failed", (), sys.exc_info()
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        results = run_training(cfg)
    except Exception:
        log_failure_to_run_log()
        raise
    print_before_after(results)
    after = results["after"] or {}
    return after.get("M/mAP", after.get("mAP"))  # the figure Hydra sweepers optimise


if __name__ == "__main__":
    main()
