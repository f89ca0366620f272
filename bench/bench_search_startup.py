"""retrieval-search's start-up: `--help` and one `query`, beside the imports its command line made
eagerly before it imported lazily (the search modules: torch, torchvision, FAISS), in one run.

    python bench/bench_search_startup.py                       # 40 UKBench photos, 5 repeats
    python bench/bench_search_startup.py --photos DIR --count 40 --repeats 5

Each command runs in a fresh process, interleaved with the others, so a busy machine slows all
of them alike; the table gives the median and the spread (min-max) of the wall times.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "ukbench_sample" / "images"
CLI = [sys.executable, "-m", "retrieval.search.cli"]
# What `retrieval-search --help` imported before the commands imported their modules themselves.
EAGER_IMPORTS = (
    "import retrieval.search.engine, retrieval.search.html, retrieval.search.server, "
    "retrieval.search.store"
)


def wall(command: list[str]) -> float:
    """Seconds one command takes from start to exit (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="a folder of photos")
    parser.add_argument("--count", type=int, default=40, help="photos indexed")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if not photos:
        sys.exit(f"no .jpg/.png photos in {args.photos}; pass --photos DIR")
    work = Path(tempfile.mkdtemp(prefix="search_startup_"))
    try:
        folder = work / "photos"
        folder.mkdir()
        for photo in photos[: args.count]:  # links: the photos are not copied
            (folder / photo.name).symlink_to(photo.resolve())
        index = work / "index"
        print(f"indexing {len(list(folder.iterdir()))} photos of {args.photos} ...", flush=True)
        wall([*CLI, "index", str(folder), "--out", str(index), "--quiet"])
        query = str(next(iter(sorted(folder.iterdir()))))
        commands = {
            "retrieval-search --help": [*CLI, "--help"],
            "importing the search modules (--help before)": [sys.executable, "-c", EAGER_IMPORTS],
            "retrieval-search query IMAGE -k 3": [*CLI, "query", query, "--index", str(index)]
            + ["-k", "3"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(wall(command))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.repeats} runs each, interleaved\n")
    print("| command | median s | min-max s |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |")
    help_now, help_before = (statistics.median(times[n]) for n in list(commands)[:2])
    print(f"\n--help now takes {help_now / help_before:.0%} of the imports it made before")


if __name__ == "__main__":
    main()
