"""`retrieval-search`: index a photo folder, query it, browse it on a local web page.

retrieval-search index PHOTOS_DIR --out INDEX_DIR [--checkpoint CKPT]
retrieval-search query IMAGE --index INDEX_DIR [-k 10] [--box x1 y1 x2 y2] [--html OUT.html]
retrieval-search serve --index INDEX_DIR [--host 127.0.0.1] [--port 8000]
retrieval-search ukbench --index INDEX_DIR     # N-S score of an indexed UKBench folder
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence

from retrieval.atomic import DiskFullError
from retrieval.search.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_POOLING,
    DEFAULT_SCALES,
)
from retrieval.search.errors import SearchError

# Each command imports what it needs when it runs (torch, torchvision and FAISS take seconds to
# import): `--help` and option errors answer at once.

log = logging.getLogger("retrieval.search")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="retrieval-search", description="Search your own photos by image similarity."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    commands = parser.add_subparsers(dest="command", required=True)

    def network_options(sub: argparse.ArgumentParser, for_index: bool) -> None:
        sub.add_argument(
            "--checkpoint",
            help="a model.pt/.ckpt written by train.py"
            + (
                f" (default: off-the-shelf ImageNet {DEFAULT_BACKBONE}-{DEFAULT_POOLING})"
                if for_index
                else " (default: the network that built the index)"
            ),
        )
        sub.add_argument("--device", default="auto", help="cpu, cuda, ... (auto: CUDA if any)")

    index = commands.add_parser("index", help="create or update the index of a photo folder")
    index.add_argument("photos", metavar="PHOTOS_DIR", help="folder searched recursively")
    index.add_argument("--out", required=True, metavar="INDEX_DIR", help="the index folder")
    network_options(index, for_index=True)
    index.add_argument("--backbone", default=DEFAULT_BACKBONE, help="off-the-shelf backbone")
    index.add_argument("--pooling", default=DEFAULT_POOLING, help="off-the-shelf pooling")
    index.add_argument(
        "--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="longest side (as evaluate.py)"
    )
    index.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=list(DEFAULT_SCALES),
        help="multi-scale factors (as evaluate.py)",
    )
    index.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16", "int8"),
        help="int8: CPUs, 3-4x faster with ResNet-class networks (queries stay fp32)",
    )
    index.add_argument("--batch-size", type=int, default=16)
    index.add_argument(
        "--chunk", type=int, default=1000, help="commit the index every CHUNK extracted images"
    )
    index.add_argument("--quiet", action="store_true", help="no progress bar")

    query = commands.add_parser("query", help="print the indexed images most similar to IMAGE")
    query.add_argument("image", metavar="IMAGE")
    query.add_argument("--index", required=True, metavar="INDEX_DIR")
    query.add_argument("-k", type=int, default=10, help="number of results")
    query.add_argument(
        "--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"), help="query region"
    )
    query.add_argument("--html", metavar="OUT.html", help="also write a page with thumbnails")
    network_options(query, for_index=False)

    serve = commands.add_parser("serve", help="a local web page to search the index")
    serve.add_argument("--index", required=True, metavar="INDEX_DIR")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("-k", type=int, default=10, help="default number of results")
    serve.add_argument(
        "--origin",
        action="append",
        default=[],
        metavar="URL",
        help="public address of a reverse proxy in front (https://photos.example.com)",
    )
    network_options(serve, for_index=False)

    ukbench = commands.add_parser(
        "ukbench", help="N-S score of an index of a UKBench folder (ukbench%%05d.jpg)"
    )
    ukbench.add_argument("--index", required=True, metavar="INDEX_DIR")
    return parser


def run_index(args: argparse.Namespace) -> int:
    """Create or update an index; print the counts and the skipped files."""
    from retrieval.search.store import update_index

    report = update_index(
        args.photos,
        args.out,
        checkpoint=args.checkpoint,
        backbone=args.backbone,
        pooling=args.pooling,
        image_size=args.image_size,
        scales=tuple(args.scales),
        precision=args.precision,
        batch_size=args.batch_size,
        device=args.device,
        chunk_size=args.chunk,
        progress=not args.quiet,
    )
    print(report.summary())
    for entry in report.skipped:
        print(f"skipped (unreadable): {entry['path']}: {entry['error']}")
    return 0


def run_query(args: argparse.Namespace) -> int:
    """Print the ranked results of one image; optionally write the HTML page."""
    from retrieval.search.engine import Searcher, check_query
    from retrieval.search.html import write_results_page

    box = tuple(args.box) if args.box else None
    check_query(args.image, box)  # a wrong path or box is named before the network loads
    searcher = Searcher(args.index, checkpoint=args.checkpoint, device=args.device)
    hits = searcher.search(searcher.describe(args.image, box), args.k)[0]
    for hit in hits:
        print(f"{hit.rank:4d}  {hit.score:.4f}  {hit.path}")
    if args.html:
        print(f"page written to {write_results_page(args.html, args.image, hits, box)}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Serve the search page until interrupted."""
    from retrieval.search.engine import Searcher
    from retrieval.search.server import make_server

    searcher = Searcher(args.index, checkpoint=args.checkpoint, device=args.device)
    try:
        server = make_server(searcher, args.host, args.port, args.k, origins=args.origin)
    except OSError as err:  # the port is taken, or the address is not this machine's
        if err.errno == errno.EADDRINUSE:
            raise SearchError(
                f"port {args.port} on {args.host} is in use (another server?); pass another "
                "--port, or --port 0 to pick a free one"
            ) from err
        raise SearchError(
            f"cannot serve on --host {args.host} --port {args.port} ({err}); pass an address "
            "of this machine, e.g. --host 127.0.0.1"
        ) from err
    print(f"serving {len(searcher)} images of {args.index} on {server.url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def run_ukbench(args: argparse.Namespace) -> int:
    """Print the N-S score of an indexed UKBench folder."""
    from retrieval.search.engine import ukbench_score
    from retrieval.search.store import IndexStore

    print(f"N-S {ukbench_score(IndexStore.load(args.index)):.4f}")
    return 0


def expected_failure(err: Exception) -> str | None:
    """The one-line message of a failure the user can fix, or None for a bug."""
    if isinstance(err, (SearchError, DiskFullError, FileNotFoundError)):
        return str(err)  # their messages name the thing and the fix
    if isinstance(err, OSError) and err.filename:  # a path that cannot be used (rights, a file)
        return f"{err.strerror}: {err.filename}; check that path and its permissions"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; expected failures print one line and return 1, bugs raise."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # This tool's own progress; other libraries' (e.g. FAISS's loader) only with --verbose.
    logging.getLogger("retrieval").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    commands = {"index": run_index, "query": run_query, "serve": run_serve, "ukbench": run_ukbench}
    try:
        return commands[args.command](args)
    except (SearchError, OSError) as err:
        message = expected_failure(err)
        if message is None:
            raise  # not the user's to fix: a bug keeps its traceback
        print(f"retrieval-search {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
