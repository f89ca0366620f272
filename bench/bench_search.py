"""Search + evaluation at revisitop1m scale: FAISS (exact top-k, IVF-PQ) against a dense sort.

    python bench/bench_search.py [--n 1001001] [--dims 2048 512] [--queries 70] [--quick]

The database holds N random unit descriptors (generated chunk by chunk, never twice in memory)
and, for each query, planted positives: a few near-duplicates (cosine 0.5-0.95 to the query) and
one hard positive at cosine z / sqrt(D), z uniform in [2.5, 6] (random rows score about N(0, 1/D)),
which at a million rows often ranks beyond the top 100 or 1000. Methods:

* dense sort (cirtorch): ``scores = X Q^T`` and a full ``argsort(-scores, axis=0)``;
* faiss flat top-k: exact ``IndexFlatIP`` top-100 and top-1000;
* faiss IVF-PQ top-100: trained on a sample of the database, the rest added chunk by chunk.

Each method runs in its own subprocess; peak memory is the child's resident high-water mark
(VmHWM, reset before each search so the build peak and each search's peak are read separately).
Times are one run each. Evaluation is revisitop mAP (``compute_map``) on the planted ground truth.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK = 16384  # rows generated at once; also the unit of the per-chunk random streams
RECALL_K = 100


@dataclass
class Problem:
    """Synthetic database description, queries and planted positives (the ground truth)."""

    n: int
    dim: int
    seed: int
    queries: np.ndarray  # Q x D unit rows
    positives: np.ndarray  # Q x P database indices
    positive_vectors: np.ndarray  # Q x P x D unit rows planted at those indices


def make_problem(n: int, dim: int, n_queries: int, n_near: int, n_hard: int, seed: int) -> Problem:
    """Queries and their planted positives; identical in every process for the same arguments."""
    rng = np.random.default_rng([seed, dim, 0])
    queries = unit_rows(rng.standard_normal((n_queries, dim)))
    n_positives = n_near + n_hard
    positives = rng.choice(n, size=n_queries * n_positives, replace=False)
    positives = positives.reshape(n_queries, n_positives)
    near = rng.uniform(0.5, 0.95, size=(n_queries, n_near))
    hard = np.minimum(rng.uniform(2.5, 6.0, size=(n_queries, n_hard)) / math.sqrt(dim), 1.0)
    cosine = np.concatenate([near, hard], axis=1)
    # Exact cosine: mix each query with a random direction orthogonal to it.
    noise = rng.standard_normal((n_queries, n_positives, dim))
    noise -= np.einsum("qpd,qd->qp", noise, queries)[..., None] * queries[:, None]
    noise /= np.linalg.norm(noise, axis=2, keepdims=True)
    vectors = cosine[..., None] * queries[:, None] + np.sqrt(1 - cosine**2)[..., None] * noise
    return Problem(n, dim, seed, queries.astype(np.float32), positives, vectors.astype(np.float32))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in place."""
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x


def fill_rows(problem: Problem, start: int, out: np.ndarray) -> None:
    """Database rows [start, start + len(out)) into ``out``; ``start`` is a multiple of CHUNK."""
    rng = np.random.default_rng([problem.seed, problem.dim, 1, start // CHUNK])
    rng.standard_normal(out=out, dtype=np.float32)
    unit_rows(out)
    flat = problem.positives.ravel()
    here = (flat >= start) & (flat < start + len(out))
    out[flat[here] - start] = problem.positive_vectors.reshape(-1, problem.dim)[here]


def iter_chunks(problem: Problem, begin: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
    """Database rows [begin, end) chunk by chunk, in one reused buffer."""
    end = problem.n if end is None else end
    buffer = np.empty((CHUNK, problem.dim), dtype=np.float32)
    for start in range(begin - begin % CHUNK, end, CHUNK):
        rows = buffer[: min(CHUNK, problem.n - start)]
        fill_rows(problem, start, rows)
        yield rows[max(0, begin - start) : end - start]


def ground_truth(problem: Problem) -> list[dict[str, np.ndarray]]:
    """revisitop-style ground truth: the planted rows are each query's positives."""
    return [{"ok": row} for row in problem.positives]


# --------------------------------------------------------------------------------------------
# Memory: the resident high-water mark of this process, resettable (Linux /proc)
# --------------------------------------------------------------------------------------------


def status_mb(field: str) -> float:
    """A VmRSS/VmHWM figure of this process in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS, so the next reading is the peak of what follows."""
    Path("/proc/self/clear_refs").write_text("5")


# --------------------------------------------------------------------------------------------
# Workers: one method each, run in a subprocess
# --------------------------------------------------------------------------------------------


def measure(run: Callable[[], tuple[np.ndarray, np.ndarray]], problem: Problem) -> dict:
    """Time a search, then its evaluation; their peak RSS beyond what was resident before."""
    from retrieval.eval.metrics import compute_map

    reset_peak()
    resident = status_mb("VmRSS")
    start = time.perf_counter()
    ranks, top = run()
    searched = time.perf_counter()
    _, aps, _, _ = compute_map(ranks, ground_truth(problem), (), n_db=problem.n)
    done = time.perf_counter()
    return {
        "search_s": searched - start,
        "eval_s": done - searched,
        "peak_mb": status_mb("VmHWM"),
        "extra_mb": status_mb("VmHWM") - resident,
        "aps": aps.tolist(),
        "top": top[:, :1000].tolist(),
    }


def worker_dense(problem: Problem, args: argparse.Namespace) -> list[dict]:
    """cirtorch's evaluation: a dense score matrix and a full sort of the whole database."""
    database = np.empty((problem.n, problem.dim), dtype=np.float32)
    for row in range(0, problem.n, CHUNK):
        fill_rows(problem, row, database[row : row + CHUNK])
    build_peak = status_mb("VmHWM")

    def run() -> tuple[np.ndarray, np.ndarray]:
        scores = database @ problem.queries.T  # N x Q, as cirtorch's vecs.T @ qvecs
        ranks = np.argsort(-scores, axis=0)
        return ranks.T, ranks[:1000].T  # compute_map takes (queries, ranked)

    row = measure(run, problem)
    row.update(method="dense sort (cirtorch)", build_s=0.0, build_peak_mb=build_peak)
    row["full_ranking"] = True
    return [row]


def worker_flat(problem: Problem, args: argparse.Namespace) -> list[dict]:
    """Exact FAISS inner-product search, top-k for each k in --ks."""
    import faiss

    index = faiss.IndexFlatIP(problem.dim)
    # Reserve the whole storage once: a growing std::vector would briefly hold two copies.
    index.codes.resize(problem.n * problem.dim * 4)
    index.codes.resize(0)
    build = 0.0
    for chunk in iter_chunks(problem):
        start = time.perf_counter()
        index.add(chunk)
        build += time.perf_counter() - start
    build_peak = status_mb("VmHWM")
    rows = []
    # FAISS >= 1.12 computes few-query searches (nq * d < 128000) pair by pair, memory-bound;
    # the last row forces its BLAS path instead.
    default_threshold = faiss.cvar.distance_compute_blas_threshold
    for k, threshold in [(k, default_threshold) for k in args.ks] + [(RECALL_K, 0)]:
        faiss.cvar.distance_compute_blas_threshold = threshold

        def run(k: int = k) -> tuple[np.ndarray, np.ndarray]:
            _, ranks = index.search(problem.queries, k)
            return ranks, ranks

        row = measure(run, problem)
        name = f"faiss flat top-{k}" + (", BLAS forced" if threshold == 0 else "")
        row.update(method=name, build_s=build, build_peak_mb=build_peak)
        rows.append(row)
    return rows


def worker_ivfpq(problem: Problem, args: argparse.Namespace) -> list[dict]:
    """FAISS IVF-PQ: trained on the first rows (a random sample), then the rest added."""
    from retrieval.index import build_index

    nlist = 2 ** round(math.log2(math.sqrt(problem.n)))
    # 40 points per list: just above the 39 FAISS asks for, as k-means dominates the build time.
    sample_rows = min(problem.n, 40 * nlist)
    sample = np.concatenate([c.copy() for c in iter_chunks(problem, end=sample_rows)])
    start = time.perf_counter()
    index = build_index(sample, "ivfpq", nlist=nlist)  # trains on the sample and adds it
    build = time.perf_counter() - start
    del sample
    for chunk in iter_chunks(problem, begin=sample_rows):
        start = time.perf_counter()
        index.add(chunk)
        build += time.perf_counter() - start
    index.nprobe = args.nprobe
    build_peak = status_mb("VmHWM")

    def run() -> tuple[np.ndarray, np.ndarray]:
        _, ranks = index.search(problem.queries, RECALL_K)
        return ranks, ranks

    row = measure(run, problem)
    name = f"faiss IVF-PQ top-{RECALL_K} (nlist {nlist}, m {index.pq.M}, nprobe {args.nprobe})"
    row.update(method=name, build_s=build, build_peak_mb=build_peak)
    return [row]


WORKERS = {"dense": worker_dense, "flat": worker_flat, "ivfpq": worker_ivfpq}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_001_001, help="database size")
    parser.add_argument("--dims", type=int, nargs="+", help="default 2048 512 (--quick: 512)")
    parser.add_argument("--queries", type=int, default=70)
    parser.add_argument("--near", type=int, default=4, help="planted near-duplicates per query")
    parser.add_argument("--hard", type=int, default=1, help="planted hard positives per query")
    parser.add_argument("--ks", type=int, nargs="+", default=[100, 1000], help="flat top-k")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N = 100,000, D = 512: under a minute")
    parser.add_argument(
        "--dense-max-gb",
        type=float,
        default=None,
        help="memory allowed to the dense baseline (default: 60%% of MemAvailable); a larger "
        "database runs it on the largest size that fits, and the others on that size too",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-dim", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n = 100_000
    args.dims = args.dims or ([512] if args.quick else [2048, 512])
    return args


def mem_available_gb() -> float:
    """MemAvailable from /proc/meminfo in GB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def needed_gb(method: str, n: int, dim: int, n_queries: int) -> float:
    """Estimated peak memory of a method, 0.5 GB of it for the interpreter and libraries."""
    if method == "dense":
        # X, then per query and row: scores, -scores, argsort's copy and int64 result, and
        # compute_map's range checks (about 24 bytes).
        per_row = 4 * dim + 24 * n_queries
    elif method == "flat":
        per_row = 4 * dim
    else:
        per_row = 64  # PQ codes and ids; the training sample is small
    return 0.5 + n * per_row / 2**30


def dense_size(n: int, dim: int, n_queries: int, budget_gb: float) -> int:
    """The largest database (<= n) whose dense evaluation fits the memory budget."""
    per_row_gb = needed_gb("dense", 1, dim, n_queries) - needed_gb("dense", 0, dim, n_queries)
    return max(0, min(n, int((budget_gb - 0.5) / per_row_gb)))


def run_worker(method: str, n: int, dim: int, args: argparse.Namespace) -> list[dict] | str:
    """One method in a fresh interpreter: its result rows, or why it failed."""
    argv = [sys.executable, __file__, "--worker", method, "--worker-n", str(n)]
    argv += ["--worker-dim", str(dim), "--queries", str(args.queries)]
    argv += ["--near", str(args.near), "--hard", str(args.hard), "--seed", str(args.seed)]
    argv += ["--nprobe", str(args.nprobe), "--ks", *map(str, args.ks)]
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.run(argv, stdout=out, text=True, check=False, env=worker_env())
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        return "killed (out of memory?)" if proc.returncode == -9 else f"exit {proc.returncode}"
    return json.loads(text.strip().splitlines()[-1])


def worker_env() -> dict[str, str]:
    """The workers' environment: idle OpenMP threads sleep unless the caller chose otherwise."""
    # FAISS alternates OpenMP regions with OpenBLAS calls; spinning OpenMP threads starve
    # OpenBLAS's on a small machine (3x slower IVF training and BLAS search on 2 cores).
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def add_accuracy(rows: list[dict], problem: Problem) -> None:
    """mAP, planted positives found, recall@100 against exact search and agreement with dense."""
    dense = next((r for r in rows if r.get("full_ranking")), None)
    exact = next((r for r in rows if r["method"] == f"faiss flat top-{RECALL_K}"), None)
    for row in rows:
        top, aps = np.asarray(row["top"]), np.asarray(row["aps"])
        row["map"] = 100 * float(np.mean(aps))
        # The dense row keeps only its top 1000, but its ranking is complete.
        hits = np.stack([np.isin(p, t) for p, t in zip(problem.positives, top, strict=True)])
        if row.get("full_ranking"):
            hits[:] = True
        row["found"] = float(hits.mean())
        row["complete"] = int(hits.all(axis=1).sum())
        if exact is not None:
            exact_top = np.asarray(exact["top"])[:, :RECALL_K]
            same = [
                np.intersect1d(t[:RECALL_K], e).size for t, e in zip(top, exact_top, strict=True)
            ]
            row["recall"] = sum(same) / exact_top.size
        if dense is not None:
            row["same_ap"] = int(np.sum(np.abs(aps - np.asarray(dense["aps"])) < 1e-12))
            row["speedup"] = (dense["search_s"] + dense["eval_s"]) / (
                row["search_s"] + row["eval_s"]
            )
            row["mem_ratio"] = peak(row) / peak(dense)


def peak(row: dict) -> float:
    """A method's peak RSS: the larger of its build peak and its search + evaluation peak."""
    return max(row["peak_mb"], row["build_peak_mb"])


def run_size(n: int, dim: int, args: argparse.Namespace, methods: list[str]) -> list[dict]:
    """All requested methods on one database size; result rows with accuracy filled in."""
    rows: list[dict] = []
    for method in methods:
        need, free = needed_gb(method, n, dim, args.queries), mem_available_gb()
        if need > 0.9 * free:
            rows.append({"method": method, "failed": f"skipped: needs {need:.1f} of {free:.1f} GB"})
            continue
        start = time.perf_counter()
        result = run_worker(method, n, dim, args)
        print(
            f"  {method:6s} N={n} D={dim}: {time.perf_counter() - start:.0f} s wall",
            file=sys.stderr,
        )
        if isinstance(result, str):
            rows.append({"method": method, "failed": result})
            continue
        rows += result
    problem = make_problem(n, dim, args.queries, args.near, args.hard, args.seed)
    add_accuracy([r for r in rows if "failed" not in r], problem)
    for row in rows:
        row.update(n=n, dim=dim)
    return rows


def table(header: list[str], lines: list[list[str]]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(cells) + " |" for cells in lines])


def fmt(row: dict, key: str, spec: str) -> str:
    """A formatted figure, or an empty cell."""
    return format(row[key], spec) if key in row else ""


def report(rows: list[dict], n_queries: int) -> str:
    """The time/memory table and the accuracy table."""
    timing, quality = [], []
    for r in rows:
        ident = [r["method"], f"{r['n']:,}", str(r["dim"])]
        if "failed" in r:
            timing.append(ident + [r["failed"]] + [""] * 8)
            continue
        total = r["search_s"] + r["eval_s"]
        timing.append(
            ident
            + [
                f"{r['build_s']:.2f}",
                f"{r['search_s']:.3f}",
                f"{r['eval_s']:.3f}",
                f"{total:.3f}",
                f"{n_queries / r['search_s']:.1f}",
                f"{peak(r):,.0f}",
                f"{r['extra_mb']:,.0f}",
                fmt(r, "speedup", ".1f") + ("x" if "speedup" in r else ""),
                fmt(r, "mem_ratio", ".2f"),
            ]
        )
        quality.append(
            ident
            + [
                fmt(r, "recall", ".3f"),
                f"{r['map']:.2f}",
                f"{r['found']:.3f}",
                f"{r['complete']}/{n_queries}",
                f"{r['same_ap']}/{n_queries}" if "same_ap" in r else "",
            ]
        )
    head = ["method", "N", "D"]
    return (
        table(
            head
            + [
                "build (s)",
                "search (s)",
                "eval (s)",
                "time (s)",
                "queries/s",
                "peak RSS (MB)",
                "search+eval RSS (MB)",
                "speed-up vs dense",
                "peak RSS / dense",
            ],
            timing,
        )
        + "\n\n"
        + table(
            head
            + [
                f"recall@{RECALL_K} vs exact",
                "mAP (%)",
                "positives found",
                "queries with all positives ranked",
                "queries with AP = dense AP",
            ],
            quality,
        )
    )


def main() -> None:
    args = parse_args()
    if args.worker:
        problem = make_problem(
            args.worker_n, args.worker_dim, args.queries, args.near, args.hard, args.seed
        )
        rows = WORKERS[args.worker](problem, args)
        print(json.dumps(rows))
        return
    import faiss

    budget = args.dense_max_gb or 0.6 * mem_available_gb()
    print(
        f"{os.cpu_count()} CPUs, faiss {faiss.__version__} with {faiss.omp_get_max_threads()} "
        f"threads (OMP_WAIT_POLICY={worker_env()['OMP_WAIT_POLICY']}), numpy {np.__version__}; "
        f"{args.queries} queries, {args.near} near-duplicate + "
        f"{args.hard} hard positives each; dense baseline memory budget {budget:.1f} GB\n",
        flush=True,
    )
    rows: list[dict] = []
    for dim in args.dims:
        n_dense = dense_size(args.n, dim, args.queries, budget)
        if n_dense < args.n:
            print(f"dense baseline at D={dim} fits N={n_dense:,} only\n", flush=True)
            if n_dense >= 1000:
                rows += run_size(n_dense, dim, args, ["dense", "flat", "ivfpq"])
            rows += run_size(args.n, dim, args, ["flat", "ivfpq"])
        else:
            rows += run_size(args.n, dim, args, ["dense", "flat", "ivfpq"])
    print(report(rows, args.queries))


if __name__ == "__main__":
    main()
