"""W&B run names: a sweep's runs are named by what the sweep varies, a single run readably."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from retrieval.pipelines.loggers import run_group_and_name, run_name

SWEEP = ["debug=tiny", "trainer.max_epochs=1", "logger=[csv,wandb]", "pooling=mac,gem", "lr=1,2"]


def test_a_sweep_run_is_named_by_the_swept_keys_only():
    job = ["debug=tiny", "trainer.max_epochs=1", "logger=[csv,wandb]", "pooling=gem", "lr=2"]
    assert run_name(job, SWEEP) == "pooling=gem lr=2"


def test_sweep_syntax_and_prefixes_are_recognised():
    sweep = ["+extra=1,2", "whitening=range(64,256,64)", "data.qsize=6", "~data.poolsize"]
    job = ["+extra=2", "whitening=128", "data.qsize=6", "~data.poolsize"]
    assert run_name(job, sweep) == "+extra=2 whitening=128"
    # A key set by the sweeper's own parameters (not on the command line) varies too.
    assert run_name(["data.qsize=6", "optimizer.lr=0.1"], ["data.qsize=6"]) == "optimizer.lr=0.1"


def test_a_run_with_nothing_swept_falls_back():
    assert run_name(["debug=tiny"], ["debug=tiny"], "job 3") == "job 3"


def test_a_single_run_is_named_by_its_overrides_but_the_logger():
    job = ["logger=[csv,wandb]", "pooling=mac", "data.root=/data"]
    assert run_name(job) == "pooling=mac data.root=/data"
    assert run_name(["logger=wandb"], fallback="train (defaults)") == "train (defaults)"


@pytest.fixture
def hydra_job() -> Iterator:
    """hydra_job(mode, task, sweep_dir): this process posing as a Hydra job with these settings."""

    def pose(mode: RunMode, task: list[str], sweep_dir: Path | None = None, num: int = 0) -> None:
        hydra = OmegaConf.structured(HydraConf)
        hydra.mode, hydra.overrides.task = mode, task
        hydra.job.name, hydra.job.num = "train", num
        hydra.sweep.dir = str(sweep_dir)
        HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra}))

    before = HydraConfig.instance().cfg
    yield pose
    HydraConfig.instance().cfg = before


def test_hydra_sweep_jobs_read_the_sweep_command_line_from_multirun_yaml(tmp_path, hydra_job):
    OmegaConf.save({"hydra": {"overrides": {"task": SWEEP}}}, tmp_path / "multirun.yaml")
    hydra_job(RunMode.MULTIRUN, [*SWEEP[:3], "pooling=mac", "lr=1"], tmp_path, num=0)
    assert run_group_and_name() == (str(tmp_path), "pooling=mac lr=1")
    hydra_job(RunMode.MULTIRUN, SWEEP[:3], tmp_path, num=4)
    assert run_group_and_name() == (str(tmp_path), "job 4")


def test_hydra_single_runs_are_named_by_overrides_or_as_defaults(hydra_job):
    hydra_job(RunMode.RUN, ["logger=wandb", "pooling=mac"])
    assert run_group_and_name() == (None, "pooling=mac")
    hydra_job(RunMode.RUN, [])
    assert run_group_and_name() == (None, "train (defaults)")
