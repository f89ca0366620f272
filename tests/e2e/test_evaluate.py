"""evaluate.py end to end: figures, JSON, ranks, descriptor cache, whitening, generic data."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrieval.eval.benchmarks as benchmarks
from retrieval.eval.metrics import evaluate_revisited
from retrieval.pipelines.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def test_results_json_matches_revisitop_formula_on_written_ranks(
    tmp_path, evaluate_job, tiny_world
):
    results = evaluate_job(tmp_path / "run", "datasets=[synthetic-rox,synthetic-ukbench]")
    payload = json.loads((tmp_path / "run" / "results.json").read_text())
    assert payload["results"] == results
    ranks = np.load(tmp_path / "run" / "ranks_synthetic-rox.npy")
    bench = benchmarks.load_benchmark("synthetic-rox", tiny_world)
    recomputed = evaluate_revisited(ranks, bench.gnd)
    for key, value in recomputed.items():
        assert results["synthetic-rox"][key] == pytest.approx(value)
    assert 0 < results["synthetic-rox"]["M/mAP"] < 100
    assert 1.0 <= results["synthetic-ukbench"]["N-S"] <= 4.0
    assert (tmp_path / "run" / "grid_synthetic-rox.png").stat().st_size > 0


def test_second_evaluation_reuses_cached_descriptors(tmp_path, monkeypatch, evaluate_job):
    first = evaluate_job(tmp_path / "a")

    def fail(*args, **kwargs):
        raise AssertionError("descriptors should come from the cache")

    monkeypatch.setattr(benchmarks, "extract_descriptors", fail)
    assert evaluate_job(tmp_path / "b") == first


def test_whitening_changes_the_descriptors_and_evaluates(tmp_path, evaluate_job):
    plain = evaluate_job(tmp_path / "plain")["synthetic-rox"]
    whitened = evaluate_job(tmp_path / "pca", "whitening=pca")["synthetic-rox"]
    assert whitened["M/mAP"] != plain["M/mAP"] and 0 < whitened["M/mAP"] <= 100
    # The tiny world has 30 whitening pairs: too few for cirtorch's Lw (no shrinkage) of 1280-d
    # descriptors; the error names the config key that fixes it, and that key works.
    with pytest.raises(ConfigError, match=r"30 matching pairs .* whitening_dim=N with N <= 30"):
        evaluate_job(tmp_path / "lw", "whitening=learned", "whitening_shrinkage=0")
    reduced = evaluate_job(
        tmp_path / "lw16", "whitening=learned", "whitening_shrinkage=0", "whitening_dim=16"
    )
    shrunk = evaluate_job(tmp_path / "lw", "whitening=learned")  # the default shrinkage: 0.3
    assert 0 < reduced["synthetic-rox"]["M/mAP"] <= 100
    assert 0 < shrunk["synthetic-rox"]["M/mAP"] <= 100


def test_query_expansion_and_index_options_run(tmp_path, evaluate_job):
    plain = evaluate_job(tmp_path / "plain")["synthetic-rox"]
    expanded = evaluate_job(tmp_path / "qe", "qe_k=2", "dba_k=2")["synthetic-rox"]
    assert expanded["M/mAP"] != plain["M/mAP"]
    hnsw = evaluate_job(tmp_path / "hnsw", "index=hnsw")["synthetic-rox"]
    assert hnsw["M/mAP"] == pytest.approx(plain["M/mAP"], abs=1.0)


def test_truncated_ranks_give_full_map_when_positives_are_inside(
    tmp_path, evaluate_job, tiny_world
):
    full = evaluate_job(tmp_path / "full")["synthetic-rox"]
    n_db = len(benchmarks.load_benchmark("synthetic-rox", tiny_world).images)
    truncated = evaluate_job(tmp_path / "topk", f"topk={n_db - 1}")["synthetic-rox"]
    # Every query keeps all but its last-ranked image: mAP can only change if that one is positive.
    assert truncated["M/mAP"] <= full["M/mAP"] + 1e-9


def test_missing_dataset_names_the_download_command(tmp_path, evaluate_job):
    with pytest.raises(FileNotFoundError, match="python -m retrieval.data download roxford5k"):
        evaluate_job(tmp_path / "x", "datasets=[roxford5k]", f"paths.data_root={tmp_path}")


def test_generic_format_on_real_ukbench_photos(tmp_path, evaluate_job):
    if not (SHARED / "ukbench_sample" / "groundtruth.csv").is_file():
        pytest.skip(f"real photos not found in {SHARED} (the shared data folder is absent)")
    subset = tmp_path / "ukbench40"
    subset.mkdir()
    lines = (SHARED / "ukbench_sample" / "groundtruth.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:41]]
    (subset / "groundtruth.csv").write_text(
        "path,object_id\n"
        + "".join(f"{SHARED / 'ukbench_sample' / path},{obj}\n" for path, _, obj in rows)
    )
    results = evaluate_job(
        tmp_path / "run", "datasets=[generic]", f"generic_root={subset}", "image_size=160"
    )["ukbench40"]
    assert results["N-S"] > 3.0 and results["mAP"] > 70


def test_benchmark_names_are_validated(tmp_path):
    with pytest.raises(ValueError, match="Unknown benchmark 'roxford'; valid: synthetic-rox"):
        benchmarks.load_benchmark("roxford", tmp_path)
    with pytest.raises(ValueError, match="generic_root"):
        benchmarks.load_benchmark("generic", tmp_path)


def test_gldv2_protocol_scores_map_at_100():
    from retrieval.data.formats import RetrievalBenchmark

    gnd = [
        {"ok": np.array([0, 3]), "junk": np.array([], dtype=int)},
        {"ok": np.array([2]), "junk": np.array([], dtype=int)},
    ]
    bench = RetrievalBenchmark(
        "gldv2-private",
        [Path(f"{i}.jpg") for i in range(5)],
        [Path("q0.jpg"), Path("q1.jpg")],
        [None, None],
        gnd,
        "gldv2",
    )
    ranks = np.array([[3, 1, 0, 2, 4], [1, 4, 0, 3, 2]])
    # q0: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2 = 5/6; q1: hit at rank 5 -> (1/5) / 1.
    expected = 100 * (5 / 6 + 1 / 5) / 2
    assert benchmarks.score_ranks(bench, ranks)["mAP@100"] == pytest.approx(expected)


def test_figures_are_logged_to_the_selected_loggers(tmp_path, evaluate_job):
    results = evaluate_job(tmp_path / "run", "logger=[csv]")
    (metrics_csv,) = (tmp_path / "run" / "csv").rglob("metrics.csv")
    header, row = metrics_csv.read_text().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert float(values["synthetic-rox/M/mAP"]) == pytest.approx(results["synthetic-rox"]["M/mAP"])


def test_wandb_run_is_ended_with_the_figures_and_the_grid(
    tmp_path, monkeypatch, evaluate_job, offline_wandb, wandb_log
):
    """An evaluation logs its figures and its grid picture, and closes its W&B run, so a sweep's
    next job starts its own."""
    import wandb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = evaluate_job(tmp_path / "run", "logger=[csv,wandb,tensorboard]", "grid_queries=2")
    assert wandb.run is None  # finished, not left for the process exit
    (log,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_log(log)
    logged = {
        item.key or "/".join(item.nested_key): item.value_json
        for record in records
        if record.HasField("history")
        for item in record.history.item
    }
    logged_map = float(logged["synthetic-rox/M/mAP"])
    assert logged_map == pytest.approx(results["synthetic-rox"]["M/mAP"])
    # The grid written to the run folder is the picture W&B and TensorBoard got.
    grid = Image.open(tmp_path / "run" / "grid_synthetic-rox.png").convert("RGB")
    assert "pictures/grid_synthetic-rox/filenames" in logged
    (media,) = (log.parent / "files" / "media" / "images" / "pictures").glob("grid_*.png")
    assert np.array_equal(np.asarray(Image.open(media).convert("RGB")), np.asarray(grid))
    (events,) = (tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0})
    accumulator.Reload()
    (shown,) = accumulator.Images("pictures/grid_synthetic-rox")
    assert (shown.width, shown.height) == grid.size
