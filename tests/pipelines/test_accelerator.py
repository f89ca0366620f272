"""trainer=gpu (experiment=cirtorch_r101_gem sets it) on a machine without a GPU: a clear start."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import retrieval.pipelines.train as train
from retrieval.extraction import precision_probe
from retrieval.models.net import build_net
from retrieval.pipelines.accelerator import fall_back_to_cpu_without_gpu, resolve_trainer_precision
from retrieval.pipelines.config import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_the_cirtorch_recipe_falls_back_to_the_cpu_with_a_warning(
    no_gpu: None, compose_train
) -> None:
    cfg = compose_train("experiment=cirtorch_r101_gem", "data.root=/data")
    assert cfg.trainer.accelerator == "gpu"
    with pytest.warns(UserWarning, match=r"no CUDA GPU.*trainer=cpu"):
        fall_back_to_cpu_without_gpu(cfg)
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.precision == "32-true"
    trainer = pl.Trainer(**{k: v for k, v in cfg.trainer.items() if k != "_target_"})
    assert trainer.strategy.root_device.type == "cpu"


def test_half_precision_of_trainer_gpu_is_measured_on_the_cpu(no_gpu: None, compose_train) -> None:
    cfg = compose_train("trainer=gpu")
    with pytest.warns(UserWarning, match=r"trainer\.precision=auto"):
        fall_back_to_cpu_without_gpu(cfg)
    assert cfg.trainer.precision == "auto"


@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu", "default"])
def test_cpu_trainers_are_left_alone_silently(no_gpu: None, trainer: str, compose_train) -> None:
    cfg = compose_train(f"trainer={trainer}")
    before = dict(cfg.trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fall_back_to_cpu_without_gpu(cfg)
    assert dict(cfg.trainer) == before


def test_a_visible_gpu_keeps_trainer_gpu(monkeypatch: pytest.MonkeyPatch, compose_train) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = compose_train("experiment=cirtorch_r101_gem", "data.root=/data")
    fall_back_to_cpu_without_gpu(cfg)
    assert cfg.trainer.accelerator == "gpu"


def test_several_gpus_without_a_gpu_name_ddp_cpu(no_gpu: None, compose_train) -> None:
    cfg = compose_train("trainer=ddp")
    with pytest.raises(ConfigError, match=r"trainer=ddp_cpu"):
        fall_back_to_cpu_without_gpu(cfg)


def test_train_falls_back_before_any_work(
    no_gpu: None, monkeypatch: pytest.MonkeyPatch, compose_train
) -> None:
    seen = {}

    def first_work(cfg):
        seen["accelerator"] = cfg.trainer.accelerator
        raise RuntimeError("stop here")

    monkeypatch.setattr(train, "build_sources", first_work)
    cfg = compose_train("experiment=cirtorch_r101_gem", "data.root=/data", "backbone.weights=none")
    with pytest.warns(UserWarning, match="no CUDA GPU"), pytest.raises(RuntimeError, match="stop"):
        train.run_training(cfg)
    assert seen["accelerator"] == "cpu"


@pytest.mark.parametrize(
    ("fp32", "bf16", "expected"), [(1.0, 0.5, "bf16-mixed"), (0.5, 1.0, "32-true")]
)
def test_trainer_precision_auto_is_measured(
    no_gpu: None,
    compose_train,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fp32: float,
    bf16: float,
    expected: str,
) -> None:
    monkeypatch.setenv("RETRIEVAL_CACHE", str(tmp_path))
    precision_probe.forget()
    cfg = compose_train()
    assert cfg.trainer.precision == "auto"  # the default
    timed: list[str] = []

    def timer(precision: str, call) -> float:
        timed.append(precision)
        return {"fp32": fp32, "bf16": bf16}[precision]

    net = build_net("resnet18", "gem", weights="none")
    assert resolve_trainer_precision(cfg, net, timer) == expected == cfg.trainer.precision
    assert set(timed) == {"fp32", "bf16"}
    (stored,) = (tmp_path / "precision").glob("*.json")
    assert '"kind": "training"' in stored.read_text() and '"resnet18"' in stored.read_text()
    precision_probe.forget()


@pytest.mark.parametrize(
    ("override", "kept"), [("trainer.precision=32-true", "32-true"), ("trainer=ddp_cpu", "32-true")]
)
def test_a_set_trainer_precision_is_kept(compose_train, override: str, kept: str) -> None:
    def refuse(precision: str, call) -> float:
        raise AssertionError("a set precision must not be measured")

    cfg = compose_train(override)
    net = build_net("resnet18", "gem", weights="none")
    assert resolve_trainer_precision(cfg, net, refuse) == kept
