"""Sweeps: `train.py -m` runs every combination as its own run, grouped, with a summary table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from retrieval.pipelines.sweep import SUMMARY_NAME, run_labels, sweep_summary

ROOT = Path(__file__).resolve().parents[2]


def write_run(folder: Path, overrides: list[str], m_map: float) -> None:
    folder.mkdir(parents=True)
    results = {"benchmark": "b", "overrides": overrides, "after": {"M/mAP": m_map, "M/mP@1": 1}}
    (folder / "results.json").write_text(json.dumps(results))


def test_summary_lists_every_run_by_what_differs(tmp_path):
    common = ["data.qsize=6"]
    write_run(tmp_path / "0", [*common, "pooling=mac", "loss=triplet"], 50.0)
    write_run(tmp_path / "1", [*common, "pooling=gem", "loss=triplet"], 61.25)
    write_run(tmp_path / "10", [*common, "pooling=spoc", "loss=triplet"], 40.0)
    text = sweep_summary(tmp_path)
    lines = text.splitlines()
    assert "3 runs" in text and "| | M/mAP |" in text and "mP@1" not in text
    assert lines[-3:] == [
        "| pooling=mac | 50.00 |",
        "| pooling=gem | 61.25 |",
        "| pooling=spoc | 40.00 |",
    ]


def test_labels_fall_back_to_job_folders():
    runs = [{"job_dir": "0", "overrides": []}, {"job_dir": "1", "overrides": []}]
    assert run_labels(runs) == ["0", "1"]
    assert "No run" in sweep_summary("/nonexistent")


def test_multirun_sweeps_each_combination_and_writes_the_summary(tmp_path_factory, wandb_log):
    tmp_path = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp_path / "multirun"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        RETRIEVAL_DATA=str(tmp_path_factory.getbasetemp() / "worlds"),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(tmp_path / "wb"),
        WANDB_CONFIG_DIR=str(tmp_path / "wbc"),
        WANDB_CACHE_DIR=str(tmp_path / "wbk"),
    )
    env.pop("WANDB_API_KEY", None)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "debug=tiny",
            "trainer.max_epochs=1",
            "pictures.queries=1",
            "logger=[csv,wandb]",
            "pooling=mac,gem",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    results = [json.loads((sweep_dir / job / "results.json").read_text()) for job in "01"]
    assert [r["after"]["M/mAP"] > 0 for r in results] == [True, True]
    table = (sweep_dir / SUMMARY_NAME).read_text().splitlines()
    for label, r in zip(("pooling=mac", "pooling=gem"), results, strict=True):
        (row,) = [line for line in table if line.startswith(f"| {label} |")]
        assert f"{r['after']['M/mAP']:.2f}" in row and f"{r['after']['H/mAP']:.2f}" in row
    # Every run is its own W&B run, in the sweep's group, named by what the sweep varies only.
    for job, pooling in (("0", "mac"), ("1", "gem")):
        (wandb_file,) = (sweep_dir / job / "wandb").glob("offline-run-*/run-*.wandb")
        (run_record,) = [r.run for r in wandb_log(wandb_file) if r.HasField("run")]
        assert run_record.run_group == str(sweep_dir)
        assert run_record.display_name == f"pooling={pooling}"
