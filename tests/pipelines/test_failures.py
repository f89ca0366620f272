"""Entry points end on bad input with the message alone; the traceback goes to the run log."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.pipelines.config import ConfigError
from retrieval.pipelines.failures import exit_on_user_error

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_log(tmp_path):
    """A file handler on the root logger, as Hydra installs one for RUN/NAME.log."""
    handler = logging.FileHandler(tmp_path / "job.log")
    logging.getLogger().addHandler(handler)
    yield tmp_path / "job.log"
    logging.getLogger().removeHandler(handler)
    handler.close()


def _raise_and_report(error: BaseException) -> None:
    try:
        raise error
    except Exception as caught:
        exit_on_user_error(caught, logging.getLogger("job"))


def test_bad_input_exits_with_its_message_and_logs_the_traceback(run_log, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stop:
        _raise_and_report(ConfigError("pooling: 'gemm'; valid: gem, mac"))
    assert str(stop.value.code).startswith("error: pooling: 'gemm'; valid: gem, mac")
    assert str(run_log) in str(stop.value.code)
    logged = run_log.read_text()
    assert "Traceback" in logged and "ConfigError" in logged


def test_a_bug_is_left_to_hydra_with_its_traceback(run_log):
    _raise_and_report(KeyError("internal"))  # returns: the caller re-raises
    assert "KeyError" in run_log.read_text()


def test_hydra_full_error_keeps_the_traceback_for_bad_input(run_log, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    _raise_and_report(FileNotFoundError("gnd.pkl not found"))  # returns: re-raised in full


@pytest.mark.slow
def test_evaluate_py_names_the_missing_ground_truth_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "datasets=[roxford5k]",
            f"paths.data_root={tmp_path / 'data'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "backbone.weights=none",
        ],
        env=dict(env, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "gnd_roxford5k.pkl" in done.stderr and "python -m retrieval.data download" in done.stderr
    assert "Traceback" in (tmp_path / "run" / "evaluate.log").read_text()
