"""Resumable, checksum-verified downloads of the public retrieval datasets into cirtorch's layout.

Layout under ``--root`` (the same ``data.root`` the loaders in :mod:`retrieval.data.formats` read)::

    train/retrieval-SfM-120k/{retrieval-SfM-120k.pkl, retrieval-SfM-120k-whiten.pkl, ims/}
    train/retrieval-SfM-30k/{retrieval-SfM-30k-whiten.pkl, ims -> ../retrieval-SfM-120k/ims}
    test/{oxford5k,paris6k}/{gnd_<name>.pkl, jpg/}
    test/{roxford5k,rparis6k}/{gnd_<name>.pkl, jpg -> ../<oxford5k|paris6k>/jpg}
    test/revisitop1m/{revisitop1m.txt, jpg/}
    test/ukbench/full/ukbench%05d.jpg        test/holidays/jpg/NNNNNN.jpg
    gldv2/{index.csv, test.csv, retrieval_solution_v2.1.csv, train.csv, train_clean.csv}
    gldv2/{index,test,train}/a/b/c/<id>.jpg

Bookkeeping lives in ``<root>/.downloads``: partial files (``*.part``, resumed with HTTP Range),
one ``.done`` marker per finished resource and ``<name>.complete`` per finished dataset, so a
second run does nothing. Archives are extracted into a temporary folder and moved into place
before their marker is written: a folder without its marker is never taken as complete.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
STATE_DIR = ".downloads"


class DownloadError(RuntimeError):
    """A dataset file could not be downloaded, verified or extracted."""


@dataclass(frozen=True)
class Resource:
    """One file to fetch: ``dest`` is a file, or the folder an archive is extracted into."""

    url: str
    dest: str
    sha256: str | None = None
    md5: str | None = None
    md5_url: str | None = None  # a published md5sum file whose first token is the md5
    extract: bool = False
    flatten: bool = False  # keep only the files of the archive, without their folders
    subdir: str | None = None  # take only this folder of the archive as ``dest``
    part: int | None = None  # shard number, selectable with --parts


@dataclass(frozen=True)
class DatasetSpec:
    """A downloadable dataset: ordered resources, then relative symlinks ``(dest, target)``."""

    name: str
    description: str
    resources: tuple[Resource, ...]
    links: tuple[tuple[str, str], ...] = ()
    requires: tuple[str, ...] = ()
    note: str = ""
    sharded: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sharded", any(r.part is not None for r in self.resources))


# --------------------------------------------------------------------------------------------------
# Registry of official sources
# --------------------------------------------------------------------------------------------------

CIRTORCH = "http://cmp.felk.cvut.cz/cnnimageretrieval/data"
VGG = "https://www.robots.ox.ac.uk/~vgg/data"
REVISITOP1M = "http://ptak.felk.cvut.cz/revisitop/revisitop1m"
GLDV2 = "https://s3.amazonaws.com/google-landmark"


def _sfm(name: str, with_db: bool) -> tuple[Resource, ...]:
    files = [f"{name}.pkl"] if with_db else []
    files.append(f"{name}-whiten.pkl")
    return tuple(Resource(f"{CIRTORCH}/train/dbs/{f}", f"train/{name}/{f}") for f in files)


def _gnd(name: str) -> Resource:
    return Resource(f"{CIRTORCH}/test/{name}/gnd_{name}.pkl", f"test/{name}/gnd_{name}.pkl")


def _gldv2_shards(split: str, count: int) -> tuple[Resource, ...]:
    return tuple(
        Resource(
            f"{GLDV2}/{split}/images_{i:03d}.tar",
            f"gldv2/{split}",
            md5_url=f"{GLDV2}/md5sum/{split}/md5.images_{i:03d}.txt",
            extract=True,
            part=i,
        )
        for i in range(count)
    )


def _gldv2_csv(*names: str) -> tuple[Resource, ...]:
    return tuple(Resource(f"{GLDV2}/{n}", f"gldv2/{Path(n).name}") for n in names)


def _build_registry() -> dict[str, DatasetSpec]:
    oxford_jpg = Resource(
        f"{VGG}/oxbuildings/oxbuild_images-v1.tgz", "test/oxford5k/jpg", extract=True, flatten=True
    )
    paris_jpg = tuple(
        Resource(
            f"{VGG}/parisbuildings/paris_{i}-v1.tgz", "test/paris6k/jpg", extract=True, flatten=True
        )
        for i in (1, 2)
    )
    specs = [
        DatasetSpec(
            "retrieval-sfm-120k",
            "cirtorch SfM training tuples (Radenovic et al.), images + db + whitening pairs",
            (
                Resource(
                    f"{CIRTORCH}/train/ims/ims.tar.gz", "train/retrieval-SfM-120k/ims", extract=True
                ),
                *_sfm("retrieval-SfM-120k", with_db=True),
            ),
        ),
        DatasetSpec(
            "retrieval-sfm-30k",
            "cirtorch SfM-30k whitening pairs (shares the SfM-120k images)",
            _sfm("retrieval-SfM-30k", with_db=False),
            links=(("train/retrieval-SfM-30k/ims", "train/retrieval-SfM-120k/ims"),),
            requires=("retrieval-sfm-120k",),
        ),
        DatasetSpec("oxford5k", "Oxford Buildings, original gnd", (oxford_jpg, _gnd("oxford5k"))),
        DatasetSpec("paris6k", "Paris, original gnd", (*paris_jpg, _gnd("paris6k"))),
        DatasetSpec(
            "roxford5k",
            "Revisited Oxford (gnd; images shared with oxford5k)",
            (_gnd("roxford5k"),),
            links=(("test/roxford5k/jpg", "test/oxford5k/jpg"),),
            requires=("oxford5k",),
        ),
        DatasetSpec(
            "rparis6k",
            "Revisited Paris (gnd; images shared with paris6k)",
            (_gnd("rparis6k"),),
            links=(("test/rparis6k/jpg", "test/paris6k/jpg"),),
            requires=("paris6k",),
        ),
        DatasetSpec(
            "revisitop1m",
            "revisitop 1M distractors (image list + 100 tar.gz parts, parts 1-100)",
            (
                Resource(f"{REVISITOP1M}/revisitop1m.txt", "test/revisitop1m/revisitop1m.txt"),
                *(
                    Resource(
                        f"{REVISITOP1M}/jpg/revisitop1m.{i}.tar.gz",
                        "test/revisitop1m/jpg",
                        extract=True,
                        part=i,
                    )
                    for i in range(1, 101)
                ),
            ),
        ),
        DatasetSpec(
            "ukbench",
            "UKBench (10200 images, groups of 4)",
            (
                Resource(
                    "https://archive.org/download/ukbench/ukbench.zip",
                    "test/ukbench/full",
                    extract=True,
                    subdir="full",
                ),
            ),
            note="the original host (vis.uky.edu/~stewe/ukbench) is offline; archive.org mirror",
        ),
        DatasetSpec(
            "holidays",
            "INRIA Holidays (1491 images, 500 queries)",
            tuple(
                Resource(
                    f"ftp://ftp.inrialpes.fr/pub/lear/douze/data/jpg{i}.tar.gz",
                    "test/holidays/jpg",
                    extract=True,
                    subdir="jpg",
                )
                for i in (1, 2)
            ),
            note="served over FTP: an interrupted transfer restarts from the beginning",
        ),
        DatasetSpec(
            "gldv2",
            "Google Landmarks v2 retrieval metadata and ground truth (CSV only)",
            _gldv2_csv(
                "metadata/index.csv",
                "metadata/test.csv",
                "ground_truth/retrieval_solution_v2.1.csv",
            ),
            note="images: download gldv2-index and gldv2-test",
        ),
        DatasetSpec(
            "gldv2-index",
            "Google Landmarks v2 index images (100 tars of ~850 MB, parts 0-99)",
            _gldv2_shards("index", 100),
        ),
        DatasetSpec(
            "gldv2-test",
            "Google Landmarks v2 test images (20 tars of ~500 MB, parts 0-19)",
            _gldv2_shards("test", 20),
        ),
        DatasetSpec(
            "gldv2-train",
            "Google Landmarks v2 train CSVs and images (500 tars of ~1 GB, parts 0-499)",
            (*_gldv2_csv("metadata/train.csv", "metadata/train_clean.csv"),)
            + _gldv2_shards("train", 500),
        ),
    ]
    return {spec.name: spec for spec in specs}


REGISTRY: dict[str, DatasetSpec] = _build_registry()


# --------------------------------------------------------------------------------------------------
# Transfer
# --------------------------------------------------------------------------------------------------


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, url: str, sha256: str | None, md5: str | None) -> None:
    """Raise DownloadError (and delete ``path``) when a known checksum does not match."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if not expected:
            continue
        actual = _file_digest(path, algorithm)
        if actual.lower() != expected.lower():
            path.unlink(missing_ok=True)
            raise DownloadError(
                f"{algorithm} mismatch for {url}: expected {expected}, got {actual}; "
                f"the corrupt file {path} was deleted, run the download again"
            )


def _total_from_content_range(value: str | None) -> int | None:
    match = re.match(r"bytes (\d+|\*)-?(\d*)/(\d+)", value or "")
    return int(match.group(3)) if match else None


def _transfer_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One HTTP(S)/FTP attempt appending to ``part`` (resumed with a Range request)."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "retrieval-downloader/1"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        total = _total_from_content_range(err.headers.get("Content-Range"))
        if err.code == 416 and start and total == start:
            return  # the previous attempt already got every byte
        if err.code == 416:
            part.unlink()
        raise
    with response:
        resumed = start > 0 and getattr(response, "status", None) == 206
        if start and not resumed:
            logger.info("server ignored the Range request for %s; restarting", url)
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with (
            part.open("ab" if resumed else "wb") as handle,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=None if progress else True,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                handle.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` through a resumable ``.part`` file and verify its checksum."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer_once(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 416, 429):
                raise DownloadError(
                    f"could not download {url} to {dest}: HTTP {err.code} {err.reason}; "
                    "check the URL or whether the dataset moved"
                ) from err
            failure: Exception = err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            failure = err
        if attempt == retries:
            raise DownloadError(
                f"could not download {url} to {dest} after {retries + 1} attempt(s): {failure}. "
                f"Check the network connection; rerunning resumes from {part}"
            ) from failure
        logger.warning("download of %s interrupted (%s); retrying", url, failure)
        time.sleep(retry_wait * (attempt + 1))
    _verify(part, url, sha256, md5)
    os.replace(part, dest)
    return dest


def _published_md5(resource: Resource, workdir: Path, options: dict) -> str | None:
    if not resource.md5_url:
        return resource.md5
    target = workdir / Path(resource.md5_url).name
    md5_file = download_file(resource.md5_url, target, **{**options, "progress": False})
    text = md5_file.read_text().split()
    md5_file.unlink()
    if not text or not re.fullmatch(r"[0-9a-fA-F]{32}", text[0]):
        raise DownloadError(f"{resource.md5_url} does not start with an md5 checksum")
    return text[0]


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


def _safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar/tgz/zip archive into ``target`` refusing paths that escape it."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            root = target.resolve()
            for member in zipped.namelist():
                if not (target / member).resolve().is_relative_to(root):
                    raise DownloadError(f"{archive}: member {member!r} escapes the target folder")
            zipped.extractall(target)
        return
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
            return
        root = target.resolve()  # Python without extraction filters: check names ourselves
        for member in tar.getmembers():
            unsafe = member.issym() or member.islnk() or member.isdev()
            if unsafe or not (target / member.name).resolve().is_relative_to(root):
                raise DownloadError(f"{archive}: member {member.name!r} is unsafe to extract")
        tar.extractall(target)


def _move_into(source: Path, dest: Path) -> None:
    """Move the content of folder ``source`` into folder ``dest``, merging subfolders."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        target = dest / entry.name
        if entry.is_dir() and target.is_dir():
            _move_into(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def _flatten(folder: Path, into: Path) -> None:
    into.mkdir()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            if (into / path.name).exists():
                logger.warning("flattening %s: duplicate file name %s kept once", folder, path.name)
            os.replace(path, into / path.name)


def extract_archive(
    archive: str | Path, dest: str | Path, *, flatten: bool = False, subdir: str | None = None
) -> Path:
    """Extract ``archive`` into folder ``dest`` via a temporary sibling folder.

    Nothing appears in ``dest`` unless the whole archive extracted; a new ``dest`` is created by
    one rename, an existing one receives the extracted entries (merged).
    """
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        raw = tmp / "raw"
        try:
            _safe_extract(archive, raw)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
            raise DownloadError(
                f"could not extract {archive} into {dest}: {err}. The archive is corrupt or "
                "incomplete; it was deleted, run the download again"
            ) from err
        content = raw / subdir if subdir else raw
        if not content.is_dir():
            raise DownloadError(f"{archive} has no folder {subdir!r}; the archive layout changed")
        if flatten:
            _flatten(content, tmp / "flat")
            content = tmp / "flat"
        if dest.exists():
            _move_into(content, dest)
        else:
            os.replace(content, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def _marker(state: Path, resource: Resource) -> Path:
    key = hashlib.sha1(f"{resource.url}|{resource.dest}".encode()).hexdigest()[:10]
    return state / f"{Path(resource.url).name}-{key}.done"


def parse_parts(text: str) -> set[int]:
    """Parse a part selection such as ``"0-9,20,30-31"`` into a set of part numbers."""
    parts: set[int] = set()
    for chunk in filter(None, (c.strip() for c in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", chunk)
        if not match:
            raise ValueError(f"--parts: cannot read {chunk!r}; use numbers and ranges like 0-9,20")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise ValueError(f"--parts: range {chunk!r} is reversed; write it as {hi}-{lo}")
        parts.update(range(lo, hi + 1))
    return parts


def _fetch(resource: Resource, root: Path, state: Path, options: dict) -> None:
    if not resource.extract:
        md5 = _published_md5(resource, state, options)
        download_file(
            resource.url, root / resource.dest, sha256=resource.sha256, md5=md5, **options
        )
        return
    archive, dest = state / Path(resource.url).name, root / resource.dest
    # a finished archive only gets its final name once verified: reuse it after an interruption
    if not archive.exists():
        md5 = _published_md5(resource, state, options)
        download_file(resource.url, archive, sha256=resource.sha256, md5=md5, **options)
    logger.info("extracting %s into %s", archive.name, dest)
    try:
        extract_archive(archive, dest, flatten=resource.flatten, subdir=resource.subdir)
    except DownloadError:
        archive.unlink(missing_ok=True)
        raise
    archive.unlink()


def _link(root: Path, dest: str, target: str) -> None:
    link, goal = root / dest, root / target
    if link.exists() or link.is_symlink():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(goal, link.parent), link, target_is_directory=True)


def download_dataset(
    name: str,
    root: str | Path,
    *,
    force: bool = False,
    parts: Iterable[int] | None = None,
    registry: dict[str, DatasetSpec] | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    retry_wait: float = 2.0,
) -> bool:
    """Download dataset ``name`` under ``root``; True once every resource is in place.

    ``parts`` restricts sharded datasets to some shards (the rest can follow in later runs).
    """
    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(registry))}")
    spec = registry[name]
    options = {"timeout": timeout, "retries": retries, "retry_wait": retry_wait}
    root = Path(root)
    state = root / STATE_DIR / name
    complete = root / STATE_DIR / f"{name}.complete"
    if force:
        shutil.rmtree(state, ignore_errors=True)
        complete.unlink(missing_ok=True)
    if complete.exists():
        logger.info("%s already downloaded under %s (use --force to redo)", name, root)
        return True
    for required in spec.requires:
        if not download_dataset(required, root, registry=registry, **options):
            return False
    wanted = set(parts) if parts is not None else None
    state.mkdir(parents=True, exist_ok=True)
    for resource in spec.resources:
        marker = _marker(state, resource)
        if marker.exists() or (wanted is not None and resource.part not in wanted):
            continue
        logger.info("%s: %s -> %s", name, resource.url, root / resource.dest)
        _fetch(resource, root, state, options)
        marker.write_text(resource.url + "\n")
    if not all(_marker(state, r).exists() for r in spec.resources):
        missing = sum(not _marker(state, r).exists() for r in spec.resources)
        logger.info("%s: %d part(s) still to download", name, missing)
        return False
    for dest, target in spec.links:
        _link(root, dest, target)
    complete.write_text("\n".join(r.url for r in spec.resources) + "\n")
    shutil.rmtree(state, ignore_errors=True)
    logger.info("%s complete under %s", name, root)
    return True


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _listing(registry: dict[str, DatasetSpec]) -> str:
    width = max(len(n) for n in registry)
    lines = []
    for name, spec in registry.items():
        extra = f" [{spec.note}]" if spec.note else ""
        lines.append(f"{name:<{width}}  {spec.description}{extra}")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.data download",
        description="Download a public retrieval dataset into data.root (cirtorch layout).",
    )
    parser.add_argument("name", nargs="?", help="dataset name (see --list)")
    parser.add_argument("--root", help="data.root folder that receives train/ and test/")
    parser.add_argument("--force", action="store_true", help="download again even if complete")
    parser.add_argument(
        "--parts", help="shards of a sharded dataset to fetch now, e.g. 0-9,20 (default: all)"
    )
    parser.add_argument("--list", action="store_true", help="list the known datasets and exit")
    return parser


def download_main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``NAME --root DIR [--force] [--parts SPEC]`` or ``--list``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        sys.stdout.write(_listing(REGISTRY))
        return 0
    if not args.name or not args.root:
        parser.error("give a dataset NAME and --root DIR (or --list to see the names)")
    if args.name not in REGISTRY:
        parser.error(f"unknown dataset {args.name!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        parts = parse_parts(args.parts) if args.parts else None
    except ValueError as err:
        parser.error(str(err))
    if parts is not None and not REGISTRY[args.name].sharded:
        parser.error(f"--parts applies to sharded datasets only; {args.name} has no parts")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        download_dataset(args.name, args.root, force=args.force, parts=parts)
    except DownloadError as err:
        logger.error("%s", err)
        return 1
    return 0
