"""`auto` precision by measurement: fp32 against bf16 on this machine, decided once and cached.

A CPU flag does not tell whether bf16 pays: AVX-512 BF16 without AMX ran a ResNet50 1.3x slower
than fp32 on one machine and 1.8x faster on another. So `auto` times the work itself: a few calls
of the network in each precision, alternately (a busy spell slows both alike), the fastest call of
each kept. bf16 wins only when it is at least `MIN_SPEEDUP` times faster *and* its descriptors stay
at cosine >= `MIN_COSINE` to fp32's (EfficientNet-Lite0's depthwise trunk, for one, drifts further).

The decision is stored per machine, torch version, thread count, device, trunk family and kind of
work (inference or training) under ``$RETRIEVAL_CACHE/precision`` (default
``~/.cache/retrieval/precision``), so it costs seconds once; ``python -m
retrieval.extraction precision --remeasure`` measures again (e.g. after a measurement on a
busy machine, which is logged as a warning). The cosine is that of the weights the family was
first measured with: random weights can hide a drift (EfficientNet-Lite0: 1.0 random, 0.9997
ImageNet), so measure with trained weights (`--weights imagenet`) when it matters.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from retrieval.atomic import atomic_write

logger = logging.getLogger(__name__)

MIN_SPEEDUP = 1.1  # bf16 must beat fp32 clearly: fp32 is exact, a tie goes to it
MIN_COSINE = 0.9999  # bf16 descriptors against fp32's: round-off, not a different result
NOISY_SPREAD = 1.5  # slowest / fastest call of one precision above this: the machine was busy
REPEATS = 3  # timed calls per precision and round; a noisy round is followed by one more
PROBE_VERSION = 1  # bumped when what is measured changes, so older decisions are remade

# (precision, one call) -> seconds of that call; injectable so tests can fake either outcome.
Timer = Callable[[str, Callable[[], object]], float]
# precision -> one call of the work in that precision, returning descriptors (N x D).
Runs = Mapping[str, Callable[[], torch.Tensor]]


@dataclass(frozen=True)
class Decision:
    """What `auto` chose for one key, why, and the measurement behind it."""

    precision: str
    reason: str
    seconds: dict[str, list[float]] = field(default_factory=dict)
    cosine: float = float("nan")
    noisy: bool = False
    measured_at: str = ""
    key: dict = field(default_factory=dict)


def wall_timer(device: str | torch.device) -> Timer:
    """Seconds of one call by the wall clock, the device synchronised around it."""
    cuda = torch.device(device).type == "cuda"

    def timer(precision: str, call: Callable[[], object]) -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return timer


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest row-wise cosine between two descriptor matrices."""
    a, b = a.detach().double().flatten(1), b.detach().double().flatten(1)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).min())


def spread(seconds: Mapping[str, Sequence[float]]) -> float:
    """The largest slowest/fastest ratio among the precisions' timed calls."""
    return max(max(times) / min(times) for times in seconds.values())


def measure(runs: Runs, timer: Timer, repeats: int = REPEATS) -> tuple[dict[str, list], float]:
    """(seconds of each precision's timed calls, cosine of bf16's descriptors to fp32's).

    One untimed call each first (oneDNN builds its kernels for a shape on the first call, and its
    output gives the descriptors compared), then `repeats` rounds of one call each, alternately;
    when the calls spread widely (a busy machine) one more set of rounds is added.
    """
    outputs = {name: run().float() for name, run in runs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _round_set in range(2):
        for _ in range(repeats):
            for name, run in runs.items():
                seconds[name].append(timer(name, run))
        if spread(seconds) <= NOISY_SPREAD:
            break
    return seconds, cosine(outputs["fp32"], outputs["bf16"])


def decide(
    seconds: Mapping[str, Sequence[float]],
    cos: float,
    min_speedup: float = MIN_SPEEDUP,
    min_cosine: float = MIN_COSINE,
) -> tuple[str, str]:
    """(precision, why): bf16 only when faster by `min_speedup` and within `min_cosine`."""
    speedup = min(seconds["fp32"]) / min(seconds["bf16"])
    timing = (
        f"fastest call {1000 * min(seconds['fp32']):.1f} ms in fp32, "
        f"{1000 * min(seconds['bf16']):.1f} ms in bf16 ({speedup:.2f}x)"
    )
    if not cos >= min_cosine:  # NaN (non-finite bf16 output) refuses too
        return "fp32", f"bf16 descriptors at cosine {cos:.6f} to fp32's (< {min_cosine}); {timing}"
    if speedup < min_speedup:
        return "fp32", f"bf16 not faster by {min_speedup}x or more: {timing}"
    return "bf16", f"bf16 faster, descriptors at cosine {cos:.6f} to fp32's: {timing}"


@functools.cache  # every auto extraction asks; the CPU does not change within a process
def cpu_model() -> str:
    """The CPU's model name and a hash of its feature flags (VMs often show a generic name)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            label, _, value = line.partition(":")
            fields.setdefault(label.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = fields.get("flags") or fields.get("Features") or ""
    return f"{name} [flags {hashlib.sha256(flags.encode()).hexdigest()[:10]}]"


def machine_key(device: str | torch.device, family: str, kind: str) -> dict:
    """What a decision holds for: this CPU (or GPU), torch, threads, device, trunk and work."""
    device = torch.device(device)
    hardware = cpu_model()
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    return {
        "hardware": hardware,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device.type,
        "family": family,
        "kind": kind,
        "probe": PROBE_VERSION,
    }


def default_cache_dir() -> Path:
    """$RETRIEVAL_CACHE/precision, else ~/.cache/retrieval/precision (as conf/paths)."""
    base = os.environ.get("RETRIEVAL_CACHE") or Path.home() / ".cache" / "retrieval"
    return Path(base) / "precision"


_REMEMBERED: dict[str, Decision] = {}  # file -> decision, read or made in this process


def forget() -> None:
    """Drop the decisions remembered in this process (the files stay)."""
    _REMEMBERED.clear()


def measured_precision(
    key: dict,
    make_runs: Callable[[], Runs],
    timer: Timer,
    cache_dir: str | Path | None = None,
    remeasure: bool = False,
) -> Decision:
    """The decision for `key`: remembered, else read from the cache, else measured and stored.

    `make_runs` is only called when a measurement is needed (it copies the network).
    """
    text = json.dumps(key, sort_keys=True)
    name = hashlib.sha256(text.encode()).hexdigest()[:24]
    path = Path(cache_dir or default_cache_dir()) / f"{name}.json"
    if not remeasure and str(path) in _REMEMBERED:
        return _REMEMBERED[str(path)]
    with _locked(path):  # concurrent processes (DDP ranks) measure once and agree
        decision = None if remeasure else _read(path, key)
        if decision is None:
            decision = _measure_and_store(key, make_runs, timer, path)
        else:
            logger.info(
                "precision auto for %s (%s, %s): %s, decided %s: %s [%s]",
                *(key["family"], key["kind"], key["device"], decision.precision),
                *(decision.measured_at, decision.reason, path),
            )
    _REMEMBERED[str(path)] = decision
    return decision


def _measure_and_store(
    key: dict, make_runs: Callable[[], Runs], timer: Timer, path: Path
) -> Decision:
    start = time.perf_counter()
    seconds, cos = measure(make_runs(), timer)
    precision, reason = decide(seconds, cos)
    noisy = spread(seconds) > NOISY_SPREAD
    decision = Decision(
        precision,
        reason,
        seconds,
        cos,
        noisy,
        datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        key,
    )
    text = json.dumps(asdict(decision), indent=1)
    atomic_write(path, lambda handle: handle.write(text.encode()))
    logger.info(
        "precision auto for %s (%s, %s): measured in %.1f s: %s: %s",
        *(key["family"], key["kind"], key["device"], time.perf_counter() - start),
        *(precision, reason),
    )
    if noisy:
        logger.warning(
            "precision auto for %s (%s): the timed calls spread %.1fx (a busy machine?), so the "
            "choice of %s may not hold on a quiet one; measure again with `python -m "
            "retrieval.extraction precision --remeasure` or force extract.precision",
            *(key["family"], key["kind"], spread(seconds), precision),
        )
    return decision


def _read(path: Path, key: dict) -> Decision | None:
    """The stored decision for `key`, or None when absent, unreadable or for another key."""
    try:
        stored = json.loads(path.read_text())
        decision = Decision(**stored)
    except (OSError, ValueError, TypeError):
        return None
    if decision.key != key or decision.precision not in ("fp32", "bf16"):
        return None
    return decision


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on PATH.lock while deciding (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
