"""Hydra composition: every option of every group builds, bad choices and values fail clearly."""

import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from retrieval.data.augment import Augmentation
from retrieval.pipelines.config import (
    ConfigError,
    augmentation_from_config,
    build_net_from_config,
    extract_options,
    validate_network_config,
    validate_train_config,
)
from retrieval.pipelines.known_keys import check_known_keys
from retrieval.pipelines.loggers import build_loggers
from retrieval.pipelines.train import run_training

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("backbone", options("backbone"))
def test_every_backbone_option_builds(backbone, compose_train):
    cfg = compose_train(f"backbone={backbone}", "backbone.weights=none", "pooling=mac")
    net = build_net_from_config(cfg)
    assert net.meta["backbone"] == backbone


@pytest.mark.parametrize("pooling", options("pooling"))
def test_every_pooling_option_builds(pooling, compose_train):
    backbone = "alexnet" if pooling == "neural_codes" else "resnet18"
    cfg = compose_train(f"pooling={pooling}", f"backbone={backbone}", "backbone.weights=none")
    validate_train_config(cfg)
    net = build_net_from_config(cfg)
    assert net.meta["pooling"] == pooling.replace("gem_channel", "gem")


@pytest.mark.parametrize("group", ["loss", "optimizer", "data"])
def test_every_option_of_simple_groups_validates(group, compose_train):
    for option in options(group):
        overrides = [f"{group}={option}"]
        if option in ("sfm120k", "sfm30k", "labels"):
            overrides.append("data.root=/somewhere")
        cfg = compose_train(*overrides)
        validate_train_config(cfg)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_option_instantiates(trainer, tmp_path, compose_train):
    cfg = compose_train(f"trainer={trainer}")
    if cfg.trainer.accelerator == "gpu":  # no GPU here: check the rest of the composition
        cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision = "cpu", 1, "32-true"
    if cfg.trainer.get("strategy") == "ddp":
        cfg.trainer.devices = 1
    if cfg.trainer.precision == "auto":  # run_training measures it (test_accelerator.py)
        cfg.trainer.precision = "bf16-mixed"
    trainer_obj = hydra.utils.instantiate(
        cfg.trainer, default_root_dir=str(tmp_path), logger=False, enable_checkpointing=False
    )
    assert trainer_obj.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("logger", [o for o in options("logger") if o != "none"])
def test_every_logger_option_instantiates(logger, tmp_path, monkeypatch, compose_train):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_train(f"logger=[{logger}]")
    cfg.run_dir = str(tmp_path)
    (built,) = build_loggers(cfg)
    assert type(built).__name__.lower().startswith(logger.replace("tensorboard", "tensorboard"))


def test_experiment_reproduces_cirtorch_recipe(compose_train):
    cfg = compose_train("experiment=cirtorch_r101_gem", "data.root=/data")
    assert cfg.backbone.name == "resnet101" and cfg.pooling.name == "gem"
    assert cfg.loss.margin == 0.85 and cfg.optimizer.lr == 5e-7
    assert cfg.optimizer.weight_decay == 1e-6 and cfg.data.nnum == 5
    assert (cfg.data.qsize, cfg.data.poolsize, cfg.data.batch_size) == (2000, 22000, 5)
    assert (cfg.data.image_size, cfg.data.test_image_size) == (362, 1024)
    assert cfg.backbone.weights == "cirtorch"  # cirtorch's Caffe ImageNet trunk, as cirtorch
    validate_network_config(cfg)
    cfg.backbone.name = "efficientnet_lite0"
    with pytest.raises(ConfigError, match=r"'cirtorch' weights exist for \['resnet101'"):
        validate_network_config(cfg)


def test_the_labelled_photos_recipe_trains_augmented_on_labels(compose_train):
    cfg = compose_train("experiment=labelled_photos", "data.root=/photos")
    validate_train_config(cfg)
    assert cfg.data.kind == "labels" and cfg.data.root == "/photos"
    assert augmentation_from_config(cfg.data) == Augmentation(crop=0.7, rotate90=0.5, color=0.2)
    assert cfg.optimizer.lr == 1e-5 and cfg.trainer.max_epochs == 4
    assert augmentation_from_config(compose_train().data) == Augmentation()  # default: none


def test_unknown_choice_lists_valid_options(compose_train):
    with pytest.raises(MissingConfigException) as err:
        compose_train("pooling=gemm")
    message = str(err.value)
    assert "gemm" in message and "gem" in message.replace("gemm", "") and "rmac" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("loss.margin=-0.5", "loss.margin"),
        ("pooling.args.p=0.5", "pooling.args.p"),
        ("backbone.weights=/no/such/weights.pth", "backbone.weights"),
        ("data.positives=easiest", "data.positives"),
        ("optimizer.lr=abc", "optimizer.lr"),
        ("optimizer.weight_decay=abc", "optimizer.weight_decay"),
        ("optimizer.lr_decay=fast", "optimizer.lr_decay"),
        ("loss.margin=wide", "loss.margin"),
        ("data.batch_size=five", "data.batch_size"),
        ("+data.chunk_size=big", "data.chunk_size"),
        ("data.augment.crop=0", "data.augment"),
        ("data.augment.rotate90=often", "data.augment.rotate90"),
        ("data=class_folders +data.augment.crop=0.5", "data.augment"),
    ],
)
def test_invalid_values_fail_at_start_up_naming_the_key(override, key, compose_train):
    cfg = compose_train(*override.split())
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate_train_config(cfg)


@pytest.mark.slow  # runs the train.py entry point
def test_cfg_job_prints_the_composed_configuration():
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--cfg", "job", "pooling=rmac"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    cfg = OmegaConf.create(out)
    assert cfg.pooling.name == "rmac" and cfg.backbone.name == "efficientnet_lite0"


def test_extract_options_are_validated():
    cfg = OmegaConf.create({"extract": {"precision": "auto", "channels_last": True}})
    assert extract_options(cfg)["precision"] == "auto" and extract_options(cfg)["channels_last"]
    with pytest.raises(ConfigError, match="extract.precision.*valid: auto, .*, int8"):
        extract_options(OmegaConf.create({"extract": {"precision": "fp8"}}))
    assert extract_options(OmegaConf.create({"extract": {"precision": "int8"}}))["precision"]
    with pytest.raises(ConfigError, match="extract.compile.*int8.*set it to false"):
        extract_options(OmegaConf.create({"extract": {"precision": "int8", "compile": True}}))


@pytest.mark.parametrize(
    ("override", "key", "closest"),
    [
        ("+data.nnumm=3", "data.nnumm", "data.nnum"),
        ("+optimizer.lrr=0.1", "optimizer.lrr", "optimizer.lr"),
        ("+backbone.weight=none", "backbone.weight", "backbone.weights"),
        ("+data.synthetic.seedd=3", "data.synthetic.seedd", "data.synthetic.seed"),
        ("+extract.precison=fp32", "extract.precison", "extract.precision"),
        ("+paths.cachedir=/tmp", "paths.cachedir", "paths.cache_dir"),
        ("+data.augment.rotate=0.5", "data.augment.rotate", "data.augment.rotate90"),
    ],
)
def test_a_key_added_with_plus_under_a_fixed_group_is_refused(
    override, key, closest, compose_train
):
    """Hydra's advice for a typo (`+data.nnumm=3`) would add a key nothing reads."""
    cfg = compose_train(override)
    with pytest.raises(ConfigError, match=f"Unknown config key `{key}`.*did you mean `{closest}`"):
        run_training(cfg)  # refused before any work


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss=pml", "loss.name=TripletMarginLoss", "+loss.margin=0.1"],  # pml constructor args
        ["+data.chunk_size=4"],  # a data key the synthetic option leaves out
        ["+trainer.limit_train_batches=2"],  # Lightning's own arguments
        ["optimizer=adam", "+optimizer.momentum=0.9"],
        ["+data.synthetic.workers=1"],  # a SyntheticConfig field no option sets
    ],
)
def test_keys_that_may_be_added_with_plus_still_are(overrides, compose_train):
    check_known_keys(compose_train(*overrides), "train")


def test_evaluate_refuses_unknown_keys_too():
    from retrieval.pipelines.evaluate import validate_evaluate_config

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=["+synthetic.n_train_landmark=3"])
    match = "`synthetic.n_train_landmark`.*did you mean `synthetic.n_train_landmarks`"
    with pytest.raises(ConfigError, match=match):
        validate_evaluate_config(cfg)
