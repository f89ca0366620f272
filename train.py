"""Train a retrieval network: `python train.py [group=option ...]` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from retrieval.pipelines.report import print_before_after
from retrieval.pipelines.train import run_training


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    results = run_training(cfg)
    print_before_after(results)
    after = results["after"] or {}
    return after.get("M/mAP", after.get("mAP"))  # the figure Hydra sweepers optimise


if __name__ == "__main__":
    main()
