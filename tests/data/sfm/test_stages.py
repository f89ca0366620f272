"""Resumable stages: a finished stage is skipped, a changed one reruns with everything after it."""

from __future__ import annotations

import pytest

from retrieval.data.sfm.stages import Stages


def run_all(work, keys, calls):
    stages = Stages(work)
    for name, key in keys.items():
        stages.run(name, key, lambda name=name: calls.append(name) or {"n": len(calls)})
    return stages


def test_second_run_skips_finished_stages(tmp_path):
    calls: list[str] = []
    keys = {"images": {"a": 1}, "descriptors": {"b": 1}, "pairs": {"k": 5}}
    run_all(tmp_path, keys, calls)
    stages = run_all(tmp_path, keys, calls)
    assert calls == ["images", "descriptors", "pairs"]
    assert all(stages.report[s]["resumed"] for s in keys)
    assert stages.report["pairs"]["n"] == 3  # the summary comes back from the marker


def test_changed_stage_reruns_with_the_later_ones(tmp_path):
    calls: list[str] = []
    run_all(tmp_path, {"images": {"a": 1}, "descriptors": {"b": 1}, "pairs": {"k": 5}}, calls)
    calls.clear()
    run_all(tmp_path, {"images": {"a": 1}, "descriptors": {"b": 2}, "pairs": {"k": 5}}, calls)
    assert calls == ["descriptors", "pairs"]


def test_missing_output_reruns_the_stage(tmp_path):
    calls: list[str] = []
    out = tmp_path / "out.txt"
    stages = Stages(tmp_path)
    stages.run("images", {}, lambda: out.write_text("x") and {}, (out,))
    out.unlink()
    Stages(tmp_path).run("images", {}, lambda: calls.append("again") or {}, (out,))
    assert calls == ["again"]


def test_interrupted_stage_leaves_no_marker(tmp_path):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Stages(tmp_path).run("images", {}, interrupted)
    calls: list[str] = []
    Stages(tmp_path).run("images", {}, lambda: calls.append("ran") or {})
    assert calls == ["ran"]
