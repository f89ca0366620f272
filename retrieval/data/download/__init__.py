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

Modules: ``registry`` (the datasets and their sources), ``transfer`` (one file, resumed and
verified), ``archives`` (safe extraction), ``datasets`` (whole datasets) and ``cli``.
"""

from retrieval.data.download.archives import extract_archive
from retrieval.data.download.cli import download_main, parse_parts
from retrieval.data.download.datasets import STATE_DIR, download_dataset
from retrieval.data.download.registry import (
    CIRTORCH,
    GLDV2,
    REGISTRY,
    REVISITOP1M,
    VGG,
    DatasetSpec,
    Resource,
)
from retrieval.data.download.transfer import CHUNK, DownloadError, download_file

__all__ = [
    "CHUNK",
    "CIRTORCH",
    "GLDV2",
    "REGISTRY",
    "REVISITOP1M",
    "STATE_DIR",
    "VGG",
    "DatasetSpec",
    "DownloadError",
    "Resource",
    "download_dataset",
    "download_file",
    "download_main",
    "extract_archive",
    "parse_parts",
]
