"""The README's "how to add" steps, followed literally: a toy pooling and a toy benchmark join the
framework through their registries and a config file, and evaluate.py runs them end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image
from torch import Tensor

from retrieval.eval import benchmarks
from retrieval.models import pooling
from retrieval.models.pooling import Pooling
from retrieval.pipelines.config import build_net_from_config
from retrieval.pipelines.evaluate import run_evaluation
from retrieval.types import RetrievalBenchmark

CONF = Path(__file__).resolve().parents[1] / "conf"


class RootMeanSquare(Pooling):
    """Toy pooling: sqrt(mean_hw x^2) per channel, valid positions only (GeM with a fixed p=2)."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return x.pow(2).mean(dim=(-2, -1)).sqrt()
        weights = mask.to(x.dtype).unsqueeze(1)
        return ((x.pow(2) * weights).sum(dim=(-2, -1)) / weights.sum(dim=(-2, -1))).sqrt()

    def multiscale_exponent(self) -> float:
        return 2.0


COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 160, 30)}


def load_toy_benchmark(root: Path) -> RetrievalBenchmark:
    """Toy format: test/toy/<colour>_<n>.png; the first image of each colour is its query."""
    images = sorted((root / "test" / "toy").glob("*.png"))
    colours = [path.stem.split("_")[0] for path in images]
    queries = [images[colours.index(c)] for c in sorted(set(colours))]
    gnd = []
    for query in queries:
        colour, index = query.stem.split("_")[0], images.index(query)
        same = [i for i, c in enumerate(colours) if c == colour and i != index]
        gnd.append({"ok": np.array(same), "junk": np.array([index])})
    return RetrievalBenchmark("toy", images, queries, [None] * len(queries), gnd, "generic")


@pytest.fixture
def extended(tmp_path, monkeypatch):
    """Step 1 and 2 of each recipe (code and registry entry), then a conf/ with its yaml."""
    monkeypatch.setitem(pooling.POOLINGS, "rms", RootMeanSquare)
    monkeypatch.setitem(benchmarks.BENCHMARKS, "toy", load_toy_benchmark)
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "pooling" / "rms.yaml").write_text("name: rms\nargs: {}\n")
    data = tmp_path / "data" / "test" / "toy"
    data.mkdir(parents=True)
    for colour, rgb in COLOURS.items():
        for n in range(3):
            Image.new("RGB", (48 + 8 * n, 40), rgb).save(data / f"{colour}_{n}.png")
    return conf, tmp_path / "data"


def compose_evaluate(conf: Path, *overrides: str):
    with initialize_config_dir(str(conf), version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


def test_a_new_pooling_builds_from_its_yaml_and_pools_like_its_definition(extended):
    conf, _ = extended
    net = build_net_from_config(compose_evaluate(conf, "pooling=rms")).eval()
    assert net.meta["pooling"] == "rms" and net.out_dim == 1280
    images = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        feature_map = net.backbone(images)
        expected = torch.nn.functional.normalize(feature_map.pow(2).mean((-2, -1)).sqrt(), dim=-1)
        torch.testing.assert_close(net(images), expected)


def test_evaluate_runs_the_new_pooling_on_the_new_benchmark(extended, tmp_path):
    conf, data_root = extended
    cfg = compose_evaluate(
        conf,
        "pooling=rms",
        "datasets=[toy]",
        f"paths.data_root={data_root}",
        "image_size=64",
        "scales=[1.0,0.5]",
        "grid_queries=0",
    )
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "run")
        cfg.cache_dir = None
    results = run_evaluation(cfg)
    # Images of one colour are the same picture at other widths: each query finds its own two
    # first, so every figure is perfect (hand-computed: AP 1 per query, P@1 = 1).
    assert results["toy"]["mAP"] == pytest.approx(100.0)
    assert results["toy"]["mP@1"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["results"]["toy"]["mAP"] == pytest.approx(100.0)
