"""Evaluate a retrieval network: `python evaluate.py [checkpoint=PATH] [datasets=[...]]`."""

import hydra
from omegaconf import DictConfig

from retrieval.pipelines.evaluate import format_results, run_evaluation


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    results = run_evaluation(cfg)
    print(format_results(results))
    print(f"\nresults and ranks written to {cfg.output_dir}")


if __name__ == "__main__":
    main()
