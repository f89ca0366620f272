"""Evaluate a retrieval network: `python evaluate.py [checkpoint=PATH] [datasets=[...]]`."""

import logging

import hydra
from omegaconf import DictConfig

from retrieval.pipelines.evaluate import format_results, run_evaluation
from retrieval.pipelines.failures import exit_on_user_error

log = logging.getLogger("evaluate")


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        results = run_evaluation(cfg)
    except Exception as error:
        exit_on_user_error(error, log)  # bad input: its message alone; else Hydra's report
        raise
    print(format_results(results))
    print(f"\nresults and ranks written to {cfg.output_dir}")


if __name__ == "__main__":
    main()
