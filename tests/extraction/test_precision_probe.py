"""`auto` precision decided by measurement: a fake timer picks either way, the cache, forcing."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from retrieval.extraction import precision_probe
from retrieval.extraction.inference import probe_runs, representative_convs, resolve_precision


class FakeTimer:
    """Seconds per precision as given, whatever the call costs; counts the timed calls."""

    def __init__(self, fp32: float, bf16: float) -> None:
        self.seconds = {"fp32": fp32, "bf16": bf16}
        self.calls = 0

    def __call__(self, precision: str, call) -> float:
        self.calls += 1
        return self.seconds[precision]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh decision cache per test, nothing remembered from earlier tests."""
    monkeypatch.setenv("RETRIEVAL_CACHE", str(tmp_path))
    precision_probe.forget()
    yield tmp_path / "precision"
    precision_probe.forget()


def test_decide_takes_bf16_only_when_faster_and_close():
    fast = {"fp32": [1.0, 1.1], "bf16": [0.5, 0.6]}
    assert precision_probe.decide(fast, 0.99999)[0] == "bf16"
    precision, why = precision_probe.decide(fast, 0.999)  # 2x faster but not round-off
    assert precision == "fp32" and "cosine 0.999000" in why
    assert precision_probe.decide(fast, math.nan)[0] == "fp32"  # non-finite bf16 output
    slow = {"fp32": [1.0], "bf16": [0.95]}  # 1.05x: within the noise, fp32 is exact
    precision, why = precision_probe.decide(slow, 1.0)
    assert precision == "fp32" and "1.05x" in why


@pytest.mark.parametrize(("fp32", "bf16", "expected"), [(1.0, 0.5, "bf16"), (0.5, 1.0, "fp32")])
def test_auto_resolves_by_measurement(fp32: float, bf16: float, expected: str, cache: Path):
    timer = FakeTimer(fp32, bf16)
    assert resolve_precision("auto", "cpu", timer=timer) == expected
    assert timer.calls == 2 * precision_probe.REPEATS  # alternately, REPEATS calls each
    (stored,) = cache.glob("*.json")
    record = json.loads(stored.read_text())
    assert record["precision"] == expected and record["key"]["family"] == "convs"
    assert record["key"]["torch"] == torch.__version__ and record["key"]["kind"] == "inference"
    assert record["cosine"] >= precision_probe.MIN_COSINE  # the real outputs were compared


def test_the_cached_decision_is_reused(cache: Path):
    first = FakeTimer(1.0, 0.5)
    assert resolve_precision("auto", "cpu", timer=first) == "bf16"
    again = FakeTimer(0.5, 1.0)  # would pick fp32 if it measured
    assert resolve_precision("auto", "cpu", timer=again) == "bf16"  # remembered in-process
    precision_probe.forget()  # a new process: read back from the file
    assert resolve_precision("auto", "cpu", timer=again) == "bf16"
    assert again.calls == 0
    # Another kind of work (or trunk) is measured on its own.
    assert resolve_precision("auto", "cpu", kind="training", timer=again) == "fp32"
    assert again.calls == 2 * precision_probe.REPEATS and len(list(cache.glob("*.json"))) == 2


def test_a_stored_decision_for_another_machine_is_not_used(cache: Path):
    resolve_precision("auto", "cpu", timer=FakeTimer(1.0, 0.5))
    (stored,) = cache.glob("*.json")
    record = json.loads(stored.read_text())
    record["key"]["torch"] = "0.0"  # e.g. a hash collision or a hand-edited file
    stored.write_text(json.dumps(record))
    precision_probe.forget()
    timer = FakeTimer(0.5, 1.0)
    assert resolve_precision("auto", "cpu", timer=timer) == "fp32" and timer.calls > 0


def test_remeasure_replaces_the_decision(cache: Path):
    key = precision_probe.machine_key("cpu", "convs", "inference")
    runs = lambda: probe_runs(representative_convs(), "cpu", "inference")  # noqa: E731
    precision_probe.measured_precision(key, runs, FakeTimer(1.0, 0.5))
    decision = precision_probe.measured_precision(key, runs, FakeTimer(0.5, 1.0), remeasure=True)
    assert decision.precision == "fp32"
    precision_probe.forget()
    assert resolve_precision("auto", "cpu", timer=FakeTimer(1.0, 0.5)) == "fp32"


def test_forcing_never_measures():
    def refuse(precision, call):
        raise AssertionError("a forced precision must not be measured")

    assert resolve_precision("bf16", "cpu", timer=refuse) == "bf16"
    assert resolve_precision("fp32", "cpu", timer=refuse) == "fp32"
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ValueError, match="kind must be one of inference, training"):
        resolve_precision("auto", "cpu", kind="serving")


def test_a_busy_machine_gets_one_more_round_and_a_warning(caplog):
    times = iter([1.0, 0.5, 3.0, 2.0, 1.0, 0.5] + [1.0, 0.5] * 3)  # fp32, bf16 alternately

    def busy(precision, call):
        return next(times)

    with caplog.at_level(logging.INFO, logger="retrieval.extraction.precision_probe"):
        assert resolve_precision("auto", "cpu", timer=busy) == "bf16"
    assert next(times, None) is None  # all 12 calls: 3 rounds, spread 4x, then 3 more
    assert "spread 4.0x" in caplog.text and "--remeasure" in caplog.text
    assert "bf16 faster" in caplog.text  # what was chosen and why


def test_the_cpu_key_names_model_flags_torch_and_threads():
    key = precision_probe.machine_key("cpu", "resnet50", "training")
    assert "[flags " in key["hardware"]
    assert key["threads"] == torch.get_num_threads() and key["family"] == "resnet50"


def test_cuda_auto_stays_the_tensor_core_rule(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cuda") == "bf16"
