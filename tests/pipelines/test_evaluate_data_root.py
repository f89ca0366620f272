"""evaluate.py's data root: `paths.data_root`, one name for both jobs; `data_root=` deprecated."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import retrieval.data.synthetic as synthetic
import retrieval.pipelines.evaluate as evaluate
from retrieval.data import formats
from retrieval.pipelines.config import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_evaluate(out: Path, *overrides: str):
    """conf/evaluate.yaml as the entry point composes it, writing under `out`."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=["backbone.weights=none", *overrides])
    with open_dict(cfg):
        cfg.output_dir = str(out / "run")
        cfg.cache_dir = str(out / "cache")
    return cfg


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if evaluation starts any work (network, synthetic world)."""

    def started(*args, **kwargs):
        raise AssertionError("work started before the configuration was checked")

    monkeypatch.setattr(evaluate, "load_network", started)
    monkeypatch.setattr(synthetic, "ensure_world", started)


def test_paths_data_root_is_the_data_root_without_a_warning(tmp_path: Path) -> None:
    cfg = compose_evaluate(tmp_path, f"paths.data_root={tmp_path}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate.validate_evaluate_config(cfg)
        assert evaluate.evaluation_root(cfg) == tmp_path


def test_old_data_root_still_works_and_warns_naming_paths_data_root(tmp_path: Path) -> None:
    cfg = compose_evaluate(tmp_path, f"data_root={tmp_path}")
    with pytest.warns(FutureWarning, match=r"paths\.data_root="):
        evaluate.validate_evaluate_config(cfg)
    assert evaluate.evaluation_root(cfg) == tmp_path


def test_a_real_benchmark_without_a_data_root_names_paths_data_root_before_any_work(
    tmp_path: Path, no_work: None
) -> None:
    cfg = compose_evaluate(tmp_path, "datasets=[synthetic-rox,roxford5k]")
    with pytest.raises(ConfigError, match=r"paths\.data_root=") as err:
        evaluate.run_evaluation(cfg)
    assert "roxford5k" in str(err.value)
    assert "python -m retrieval.data download roxford5k" in str(err.value)
    assert "data.root" not in str(err.value).replace("paths.data_root", "")


def test_a_missing_benchmark_file_names_paths_data_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        formats.load_revisitop(tmp_path, "roxford5k")
    message = str(err.value)
    assert "test/roxford5k/gnd_roxford5k.pkl" in message
    assert "paths.data_root=" in message
