"""Train a retrieval network: `python train.py [group=option ...]` (see conf/train.yaml)."""

import logging

import hydra
from omegaconf import DictConfig

from retrieval.pipelines.failures import exit_on_user_error
from retrieval.pipelines.report import print_before_after
from retrieval.pipelines.train import run_training

log = logging.getLogger("train")


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        results = run_training(cfg)
    except Exception as error:
        exit_on_user_error(error, log)  # bad input: its message alone; else Hydra's report
        raise
    print_before_after(results)
    after = results["after"] or {}
    return after.get("M/mAP", after.get("mAP"))  # the figure Hydra sweepers optimise


if __name__ == "__main__":
    main()
