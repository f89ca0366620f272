"""The downloadable datasets: their official sources and where each file lands under data.root."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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


CIRTORCH = "http://cmp.felk.cvut.cz/cnnimageretrieval/data"
VGG = "https://www.robots.ox.ac.uk/~vgg/data"
REVISITOP1M = "http://ptak.felk.cvut.cz/revisitop/revisitop1m"
GLDV2 = "https://s3.amazonaws.com/google-landmark"


# --------------------------------------------------------------------------------------------------
# cirtorch SfM training sets
# --------------------------------------------------------------------------------------------------


def _sfm(name: str, with_db: bool) -> tuple[Resource, ...]:
    files = [f"{name}.pkl"] if with_db else []
    files.append(f"{name}-whiten.pkl")
    return tuple(Resource(f"{CIRTORCH}/train/dbs/{f}", f"train/{name}/{f}") for f in files)


def _sfm_specs() -> list[DatasetSpec]:
    return [
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
    ]


# --------------------------------------------------------------------------------------------------
# Test sets
# --------------------------------------------------------------------------------------------------


def _gnd(name: str) -> Resource:
    return Resource(f"{CIRTORCH}/test/{name}/gnd_{name}.pkl", f"test/{name}/gnd_{name}.pkl")


def _oxford_paris_specs() -> list[DatasetSpec]:
    """Oxford and Paris (original and revisited gnd) and the revisitop 1M distractors."""
    oxford_jpg = Resource(
        f"{VGG}/oxbuildings/oxbuild_images-v1.tgz", "test/oxford5k/jpg", extract=True, flatten=True
    )
    paris_jpg = tuple(
        Resource(
            f"{VGG}/parisbuildings/paris_{i}-v1.tgz", "test/paris6k/jpg", extract=True, flatten=True
        )
        for i in (1, 2)
    )
    return [
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
    ]


def _ukbench_holidays_specs() -> list[DatasetSpec]:
    return [
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
    ]


# --------------------------------------------------------------------------------------------------
# Google Landmarks v2
# --------------------------------------------------------------------------------------------------


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


def _gldv2_specs() -> list[DatasetSpec]:
    return [
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


def _build_registry() -> dict[str, DatasetSpec]:
    specs = _sfm_specs() + _oxford_paris_specs() + _ukbench_holidays_specs() + _gldv2_specs()
    return {spec.name: spec for spec in specs}


REGISTRY: dict[str, DatasetSpec] = _build_registry()
