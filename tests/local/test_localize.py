"""Localisation baseline on hand-made maps, and evaluate.py pixel=true bow=true end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from retrieval.data import formats
from retrieval.data.masks import polygons_to_mask
from retrieval.local.localize import (
    LocalizeOptions,
    component_mask,
    localize,
    mutual_nearest_neighbours,
    otsu_threshold,
    segment,
    similarity_map,
)
from retrieval.pipelines.evaluate import format_results, run_evaluation

ROOT = Path(__file__).resolve().parents[2]


def _object_map() -> torch.Tensor:
    """A 2 x 4 x 6 map: channel 0 in a 2 x 2 object (rows 1-2, cols 3-4), else channel 1."""
    fmap = torch.zeros(2, 4, 6)
    fmap[1] = 1.0
    fmap[:, 1:3, 3:5] = torch.tensor([1.0, 0.1])[:, None, None]
    return fmap


def test_similarity_map_global_and_local():
    fmap = _object_map()
    sim = similarity_map(torch.tensor([2.0, 0.0]), fmap)  # cosine ignores the scale
    assert sim.shape == (4, 6)
    assert torch.allclose(sim[1:3, 3:5], torch.tensor(1 / np.sqrt(1.01)).float())
    assert torch.allclose(sim[0, 0], torch.tensor(0.0))
    local = similarity_map(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), fmap)  # C x n query positions
    assert torch.allclose(local, torch.maximum(sim, similarity_map(torch.tensor([0.0, 1.0]), fmap)))


def test_otsu_threshold_splits_two_modes():
    values = np.concatenate([np.full(300, 0.1), np.full(100, 0.8)])
    cut = otsu_threshold(values + np.random.default_rng(0).normal(0, 0.02, 400))
    assert 0.2 < cut < 0.7


def test_component_mask_keeps_seeded_components_only():
    mask = np.zeros((5, 7), bool)
    mask[0:2, 0:2] = True
    mask[3:5, 4:7] = True
    mask[2, 2] = True  # touches the first block diagonally only: 4-connectivity leaves it out
    got = component_mask(mask, [(0, 0)])
    assert got.sum() == 4 and got[0:2, 0:2].all()
    both = component_mask(mask, [(0, 1), (4, 6), (2, 5)])  # (2, 5) is background: ignored
    assert both.sum() == 10
    assert not component_mask(mask, []).any()


def test_segment_finds_the_object_at_image_size():
    fmap = _object_map()
    sim = similarity_map(torch.tensor([1.0, 0.0]), fmap)
    mask = segment(sim, (40, 60), threshold=0.5)
    # feature cells are 10 x 10 pixels: the object covers rows 10-29 and columns 30-49
    expected = np.zeros((40, 60), bool)
    expected[10:30, 30:50] = True
    assert (mask & expected).sum() / (mask | expected).sum() > 0.8
    assert segment(torch.ones(4, 6), (8, 12)).all()  # a flat map: the whole image


def test_mutual_nearest_neighbours_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    b = torch.tensor([[1.0, 0.05], [0.1, 1.0]])
    # a0 <-> b0 and a1 <-> b1 are mutual; a2's best is b0, whose best is a0
    assert mutual_nearest_neighbours(a, b).tolist() == [[0, 0], [1, 1]]


def test_localize_with_and_without_verification():
    fmap = _object_map()
    query_map = fmap[:, 1:3, 3:5]  # the object cropped, as a query
    query_vec = torch.tensor([1.0, 0.1]) / np.sqrt(1.01)
    for options in (LocalizeOptions(), LocalizeOptions(similarity="local", verify=True)):
        got = localize(query_map, query_vec, fmap, (40, 60), options)
        assert got.box is not None and got.mask.shape == (40, 60)
        x1, y1, x2, y2 = got.box
        assert 25 <= x1 <= 35 and 45 <= x2 <= 55 and 5 <= y1 <= 15 and 25 <= y2 <= 35
    with pytest.raises(ValueError, match="threshold must be 'otsu' or a fraction"):
        LocalizeOptions(threshold=2.0)


def test_format_results_groups_rows_with_the_same_figures():
    text = format_results(
        {"a": {"x": 1.0}, "a/bow": {"x": 2.0}, "a/pixel": {"y": 3.0}, "b": {"x": 4.0}}
    )
    tables = text.split("\n\n")
    assert len(tables) == 3 and "a/bow" in tables[0] and "a/pixel" in tables[1]


@pytest.mark.slow
def test_evaluate_pixel_and_bow_end_to_end(tmp_path, tiny_world):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "evaluate",
            overrides=[
                "synthetic=tiny",
                "image_size=96",
                "scales=[1.0]",
                "pixel=true",
                "bow=true",
                "bow_words=16",
                "bow_images=20",
                "grid_queries=2",
            ],
        )
    out = tmp_path / "run"
    with open_dict(cfg):
        cfg.output_dir = str(out)
        cfg.cache_dir = str(tmp_path / "cache")
    results = run_evaluation(cfg)
    assert set(results) == {
        "synthetic-rox",
        "synthetic-rox/bow",
        "synthetic-rox/bow-soft",
        "synthetic-rox/pixel",
    }
    pixel = results["synthetic-rox/pixel"]
    assert pixel["M/mAP"] == results["synthetic-rox"]["M/mAP"]
    for key in ("mIoU-box", "mIoU-mask", "pmAP-box", "pmAP-mask"):
        assert 0.0 <= pixel[f"M/{key}"] <= 100.0 and 0.0 <= pixel[f"H/{key}"] <= 100.0
    assert pixel["M/mIoU-box"] > 0.0
    for row in ("synthetic-rox/bow", "synthetic-rox/bow-soft"):
        assert 0.0 < results[row]["M/mAP"] <= 100.0
    assert json.loads((out / "results.json").read_text())["results"] == results
    assert (out / "grid_synthetic-rox.png").stat().st_size > 0
    with np.load(out / "vocabulary.npz") as vocabulary:
        assert vocabulary["centroids"].shape == (16, 1280)

    # the synthetic pixel labels are the db images' landmark masks, in PROxford's format
    world = tiny_world
    labels = formats.load_pixel_groundtruth(world, "synthetic-rox")
    (q, i), label = next(iter(labels.items()))
    bench = formats.load_revisitop(world, "synthetic-rox")
    assert i in set(bench.gnd[q]["easy"]) | set(bench.gnd[q]["hard"])
    polygons, (w, h) = formats.read_labelme(label)
    mask = np.asarray(Image.open(bench.images[i].parent.parent / "masks" / f"{label.stem}.png"))
    drawn = polygons_to_mask(polygons, (h, w))
    assert (drawn == (mask > 127)).mean() > 0.99  # equal up to filled holes
