"""evaluate.py's start-up: every bad value fails before any work; the synthetic world on demand;
the data root is `paths.data_root` (one name for both jobs; `data_root=` deprecated)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

import retrieval.data.synthetic as synthetic
import retrieval.pipelines.evaluate as evaluate
from retrieval.data import formats
from retrieval.data.formats import write_generic_groundtruth
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
    """Fail the test if evaluation starts any work (network, data root, synthetic world)."""

    def started(*args, **kwargs):
        raise AssertionError("work started before the configuration was checked")

    monkeypatch.setattr(evaluate, "load_network", started)
    monkeypatch.setattr(synthetic, "ensure_world", started)


@pytest.mark.parametrize(
    ("override", "key", "valid"),
    [
        ("image_size=0", "image_size", "1024"),
        ("image_size=-5", "image_size", "1024"),
        ("image_size=abc", "image_size", "1024"),
        ("batch_size=0", "batch_size", "16"),
        ("batch_size=-1", "batch_size", "16"),
        ("topk=0", "topk", "null"),
        ("topk=-3", "topk", "null"),
        ("qe_k=-1", "qe_k", "0"),
        ("dba_k=-2", "dba_k", "0"),
        ("qe_alpha=-1", "qe_alpha", "3.0"),
        ("qe_alpha=nan", "qe_alpha", "3.0"),
        ("scales=[1.0,0]", "scales", "[1.0, 0.7071, 0.5]"),
        ("scales=[-0.5]", "scales", "[1.0, 0.7071, 0.5]"),
        ("scales=[]", "scales", "[1.0, 0.7071, 0.5]"),
        ("index=ivf", "index", "flat"),
        ("whitening=lw", "whitening", "learned"),
        ("whitening_dim=0", "whitening_dim", "null"),
        ("whitening_shrinkage=1.0", "whitening_shrinkage", "0.1"),
        ("whitening_shrinkage=-0.1", "whitening_shrinkage", "0.1"),
    ],
)
def test_bad_values_fail_before_any_work_naming_key_and_a_valid_value(
    tmp_path, no_work, override, key, valid
):
    cfg = compose_evaluate(tmp_path, override)
    with pytest.raises(ConfigError, match=rf"`{key}`") as err:
        evaluate.run_evaluation(cfg)
    assert valid in str(err.value)


def test_default_config_is_valid():
    evaluate.validate_evaluate_config(compose_evaluate(Path("/nonexistent")))


def _generic_folder(root: Path) -> Path:
    """Four 24 x 24 images of two objects, leave-one-out."""
    rows = []
    for i, colour in enumerate([(200, 0, 0), (190, 10, 0), (0, 0, 200), (0, 10, 190)]):
        Image.new("RGB", (24, 24), colour).save(root / f"{i}.png")
        rows.append({"path": f"{i}.png", "object_id": i // 2})
    write_generic_groundtruth(root / "groundtruth.csv", rows)
    return root


def test_generic_dataset_does_not_generate_the_synthetic_world(tmp_path, monkeypatch):
    def generated(*args, **kwargs):
        raise AssertionError("the synthetic world was generated for datasets=[generic]")

    monkeypatch.setattr(synthetic, "ensure_world", generated)
    (tmp_path / "photos").mkdir()
    folder = _generic_folder(tmp_path / "photos")
    cfg = compose_evaluate(
        tmp_path,
        "datasets=[generic]",
        f"generic_root={folder}",
        "image_size=24",
        "scales=[1.0]",
        "grid_queries=0",
        "device=cpu",
        "extract.precision=fp32",
    )
    results = evaluate.run_evaluation(cfg)
    assert list(results) == [folder.name]
    with pytest.raises(AssertionError, match="synthetic world was generated"):
        evaluate.run_evaluation(compose_evaluate(tmp_path, "datasets=[synthetic-rox]"))


# -- the data root --------------------------------------------------------------------------------
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
