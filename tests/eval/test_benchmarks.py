"""Benchmark extraction: a query that is a database image without a box is extracted once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.eval import benchmarks
from retrieval.eval.benchmarks import ExtractionSettings, evaluate_net, leave_one_out_benchmark
from retrieval.extraction.extract import extract_descriptors
from retrieval.index import search
from retrieval.models.net import build_net

SETTINGS = ExtractionSettings(image_size=48, batch_size=4, progress=False)


def photos(folder: Path, n: int = 8) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 4 * i, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_net("resnet18", "gem", weights="none").eval()


def test_every_image_a_query_is_extracted_once_with_the_same_figures(net, tmp_path, monkeypatch):
    paths = photos(tmp_path)
    benchmark = leave_one_out_benchmark("loo", paths, np.array([0, 0, 1, 1, 2, 2, 3, 3]))
    options = {"max_side": SETTINGS.image_size, "batch_size": SETTINGS.batch_size}
    database = extract_descriptors(net, paths, progress=False, **options)
    queries = extract_descriptors(net, paths, progress=False, **options)  # the old way: again
    _, ranks = search(database, queries)
    expected = benchmarks.score_ranks(benchmark, ranks)
    extracted: list[Path] = []

    def counting(net, paths, **kwargs):
        extracted.extend(paths)
        return extract_descriptors(net, paths, **kwargs)

    monkeypatch.setattr(benchmarks, "extract_descriptors", counting)
    figures, _ = evaluate_net(net, benchmark, SETTINGS)
    assert sorted(extracted) == sorted(paths), "every image extracted exactly once"
    assert figures == pytest.approx(expected, abs=1e-9)


def test_holidays_scores_the_official_way_on_a_hand_ranking(tmp_path):
    names = ["100000", "100001", "100002", "100100", "100101", "100200"]
    for name in names:
        (tmp_path / "jpg").mkdir(exist_ok=True)
        (tmp_path / "jpg" / f"{name}.jpg").write_bytes(b"\xff\xd8")
    bench = benchmarks.load_benchmark("holidays", tmp_path)
    assert [q.stem for q in bench.queries] == ["100000", "100100"]  # 100200 is alone
    ranks = np.array([[0, 3, 1, 5, 2, 4], [4, 3, 0, 1, 2, 5]])
    # query 100000 without itself: [3, 1, 5, 2, 4], positives 1 and 2 at positions 1 and 3:
    # trapezoids (0/1 + 1/2) / 2 and (1/3 + 2/4) / 2, each over 2 positives -> 1/3;
    # query 100100 without itself: 100101 first -> AP 1. mAP = (1/3 + 1) / 2.
    figures = benchmarks.score_ranks(bench, ranks)
    assert figures["mAP"] == pytest.approx(100 * (1 / 3 + 1) / 2)
    assert "N-S" not in figures


def test_evaluate_with_the_real_gnd_but_no_photos_names_them(shared_data, tmp_path):
    from omegaconf import open_dict

    from retrieval.pipelines.evaluate import run_evaluation
    from tests.conftest import compose_config

    folder = tmp_path / "root/test/roxford5k"
    folder.mkdir(parents=True)
    (folder / "gnd_roxford5k.pkl").symlink_to(shared_data / "revisitop_gnd/gnd_roxford5k.pkl")
    cfg = compose_config(
        "evaluate",
        ["datasets=[roxford5k]", f"paths.data_root={tmp_path / 'root'}", "backbone.weights=none"],
    )
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "run")
    with pytest.raises(FileNotFoundError) as info:
        run_evaluation(cfg)
    message = str(info.value)
    assert "roxford5k: 5063 of the 5063 images listed in" in message
    assert "(4993 database, 70 query) are missing: ashmolean_000283.jpg," in message
    assert f"Put them in {folder / 'jpg'} " in message
    assert f"download roxford5k --root {tmp_path / 'root'}" in message


def test_held_out_groups_keeps_their_images_queries_and_ground_truth(tmp_path):
    names = ["100000", "100001", "100002", "100100", "100101", "100200", "100300", "100301"]
    (tmp_path / "jpg").mkdir()
    for name in names:
        (tmp_path / "jpg" / f"{name}.jpg").write_bytes(b"\xff\xd8")
    bench = benchmarks.load_benchmark("holidays", tmp_path)
    part, db_rows, query_rows = benchmarks.held_out_groups(bench, lambda g: g != "1000")
    assert db_rows.tolist() == [3, 4, 5, 6, 7]  # scene 1000 gone, 1002 (alone) stays in the db
    assert [q.stem for q in part.queries] == ["100100", "100300"]
    assert query_rows.tolist() == [1, 2]
    assert [g["ok"].tolist() for g in part.gnd] == [[1], [4]]
    assert [g["junk"].tolist() for g in part.gnd] == [[0], [3]]
    assert part.query_db_index.tolist() == [0, 3]
    # query 100100 (itself removed) ranks 100200, then its positive 100101: trapezoid
    # (0/1 + 1/2) / 2 = 1/4; query 100300 ranks 100301 first: AP 1. The held-out part scores
    # exactly what the same photos score as a benchmark of their own.
    ranks = np.array([[0, 2, 1, 3, 4], [3, 4, 0, 1, 2]])
    own = tmp_path / "own"
    (own / "jpg").mkdir(parents=True)
    for name in names[3:]:
        (own / "jpg" / f"{name}.jpg").write_bytes(b"\xff\xd8")
    alone = benchmarks.load_benchmark("holidays", own)
    expected = 100 * (1 / 4 + 1) / 2
    assert benchmarks.score_ranks(part, ranks)["mAP"] == pytest.approx(expected)
    assert benchmarks.score_ranks(alone, ranks)["mAP"] == pytest.approx(expected)


def test_held_out_groups_needs_labels():
    bench = leave_one_out_benchmark("loo", [Path("a.jpg"), Path("b.jpg")], np.array([0, 0]))
    bench.labels = None
    with pytest.raises(ValueError, match="no labels"):
        benchmarks.held_out_groups(bench, lambda g: True)
