"""Shared fixtures: the repository's paths, composed jobs on the tiny world, offline W&B records.

Folders mirror `retrieval/`; `tests/e2e/` runs whole jobs and is marked slow (`pytest -m "not slow"`
is the inner loop, `.ci/run` runs everything).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e/ runs a whole job: mark it slow."""
    e2e = REPO / "tests" / "e2e"
    for item in items:
        if e2e in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def worlds_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Synthetic worlds (and `auto` precision decisions, descriptors) go to temporary folders per
    session, never to the user's cache."""
    monkeypatch.setenv("RETRIEVAL_DATA", str(tmp_path_factory.getbasetemp() / "worlds"))
    monkeypatch.setenv("RETRIEVAL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real photos and annotation files), or skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def compose_config(name: str, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """The composed `conf/NAME.yaml` with overrides, as the entry point would see it."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.fixture
def train_job() -> Callable[..., dict]:
    """train_job(run_dir, *overrides, world=True): a tiny train.py job, on the tiny synthetic world
    (debug=tiny) or, with world=False, on the data the overrides name (debug=tiny_job)."""
    from retrieval.pipelines.train import run_training

    def run(run_dir: Path, *overrides: str, world: bool = True) -> dict:
        debug = "debug=tiny" if world else "debug=tiny_job"
        cfg = compose_config("train", [debug, "logger=[csv]", *overrides])
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
        return run_training(cfg)

    return run


@pytest.fixture
def train_config() -> Callable[..., DictConfig]:
    """train_config(*overrides): the composed train.py configuration."""
    return lambda *overrides: compose_config("train", overrides)


@pytest.fixture
def evaluate_job() -> Callable[..., dict]:
    """evaluate_job(out, *overrides): evaluate.py on the tiny world at 96 px, returns results."""
    from retrieval.pipelines.evaluate import run_evaluation

    def run(out: Path, *overrides: str) -> dict:
        cfg = compose_config(
            "evaluate", ["synthetic=tiny", "image_size=96", "scales=[1.0]", *overrides]
        )
        with open_dict(cfg):
            cfg.output_dir = str(out)
            cfg.cache_dir = str(out.parent / "cache")
        return run_evaluation(cfg)

    return run


@pytest.fixture
def tiny_world() -> Path:
    """The folder of the tiny synthetic world (conf/synthetic/tiny.yaml), generated once."""
    from omegaconf import OmegaConf

    from retrieval.data.synthetic import SyntheticConfig, ensure_world

    params = compose_config("evaluate", ["synthetic=tiny"]).synthetic
    return ensure_world(None, SyntheticConfig(**OmegaConf.to_container(params)))


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """W&B offline and silent, writing under `tmp_path`, whatever this machine's settings."""
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var, sub in (("WANDB_DIR", "wb"), ("WANDB_CONFIG_DIR", "wbc"), ("WANDB_CACHE_DIR", "wbk")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log of 32 KiB blocks
    whose chunks have a 7-byte header: CRC32, length, type full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2

    data, block, records, pending = path.read_bytes(), 32768, [], b""
    assert data[:4] == b":W&B"
    pos = 7  # magic, version
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full or last chunk: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@pytest.fixture
def wandb_log() -> Callable[..., list]:
    """wandb_log(path, finished=True): the records of an offline run's .wandb file; with
    `finished`, waits until its exit is logged (the W&B service may lag)."""

    def read(path: Path, finished: bool = True) -> list:
        records = wandb_records(path)
        for _ in range(100 if finished else 0):
            if any(r.HasField("exit") for r in records):
                break
            time.sleep(0.1)
            records = wandb_records(path)
        return records

    return read


def _write_image(path: Path, size: tuple[int, int] = (40, 30), value: int = 0) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = np.clip(value * 20 + rng.integers(0, 60, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture
def write_image() -> Callable[..., None]:
    """write_image(path, size=(w, h), value=0): a small noisy image whose brightness grows with
    `value`, its folders created."""
    return _write_image


@pytest.fixture
def gldv2_set() -> Callable[..., list[str]]:
    """gldv2_set(root, {landmark: images}, clean=False): a tiny GLDv2 layout under root/gldv2
    (images in train/, and train.csv or, with `clean`, train_clean.csv); returns the image ids."""
    from retrieval.data import formats

    def make(root: Path, sizes: dict[int, int], clean: bool = False) -> list[str]:
        ids, landmarks = [], []
        for lm, n in sizes.items():
            for i in range(n):
                image_id = f"{lm:03d}{i:02d}abcdef"
                _write_image(formats.gldv2_image_path(root / "gldv2" / "train", image_id), value=lm)
                ids.append(image_id)
                landmarks.append(lm)
        if clean:
            rows = [
                f"{lm}," + " ".join(i for i, m in zip(ids, landmarks, strict=True) if m == lm)
                for lm in sizes
            ]
            text = "landmark_id,images\n" + "\n".join(rows)
            (root / "gldv2" / "train_clean.csv").write_text(text)
        else:
            formats.write_gldv2_train_csv(root / "gldv2" / "train.csv", ids, landmarks)
        return ids

    return make
