"""Every on-disk dataset format, one module per family, each reader beside its writer.

``sfm`` (cirtorch SfM tuples, whitening pairs, positives sidecars), ``revisitop`` (gnd pickles,
revisitop 1M, pixel labels), ``classic`` (Oxford/Paris original gnd, UKBench, Holidays),
``gldv2`` (Google Landmarks v2 CSVs), ``generic`` (``groundtruth.csv`` folders), ``images``
(image suffixes, class folders), ``labelme`` (polygon JSON) and ``safe_pickle`` (pickles that
run no code). Import the names from here: ``from retrieval.data import formats``.
"""

from retrieval.data.formats.checks import DatasetFormatError, download_command
from retrieval.data.formats.classic import (
    load_holidays,
    load_oxford,
    load_ukbench,
    write_oxford_gnd,
)
from retrieval.data.formats.generic import (
    GENERIC_COLUMNS,
    load_generic,
    read_labelled_images,
    write_generic_groundtruth,
)
from retrieval.data.formats.gldv2 import (
    GLDV2_USAGES,
    GldQuery,
    GldTrainSet,
    gldv2_dir,
    gldv2_image_path,
    load_gldv2,
    read_gldv2_solution,
    read_gldv2_train,
    write_gldv2_train_csv,
)
from retrieval.data.formats.images import IMAGE_SUFFIXES, read_class_folders
from retrieval.data.formats.labelme import read_labelme, write_labelme
from retrieval.data.formats.revisitop import (
    PIXEL_BENCHMARKS_DIR,
    gnd_path,
    load_pixel_groundtruth,
    load_revisitop,
    pair_labels_path,
    pixel_gt_dir,
    read_pair_labels,
    read_revisitop1m_list,
    test_dir,
    write_pair_labels,
    write_revisitop_gnd,
)
from retrieval.data.formats.safe_pickle import PICKLE_PROTOCOL, load_pickle
from retrieval.data.formats.sfm import (
    PositiveCandidates,
    SfmSplit,
    WhitenPairs,
    cid2filename,
    load_sfm_db,
    read_positives_sidecar,
    read_sfm_db,
    read_whiten_pairs,
    sfm_db_path,
    sfm_dir,
    sfm_ims_dir,
    sfm_whiten_path,
    write_positives_sidecar,
    write_sfm_db,
    write_whiten_pairs,
)
from retrieval.types import PROTOCOLS, Box, RetrievalBenchmark

__all__ = [
    "GENERIC_COLUMNS",
    "GLDV2_USAGES",
    "IMAGE_SUFFIXES",
    "PICKLE_PROTOCOL",
    "PIXEL_BENCHMARKS_DIR",
    "PROTOCOLS",
    "Box",
    "DatasetFormatError",
    "GldQuery",
    "GldTrainSet",
    "PositiveCandidates",
    "RetrievalBenchmark",
    "SfmSplit",
    "WhitenPairs",
    "cid2filename",
    "download_command",
    "gldv2_dir",
    "gldv2_image_path",
    "gnd_path",
    "load_generic",
    "load_gldv2",
    "load_holidays",
    "load_oxford",
    "load_pickle",
    "load_pixel_groundtruth",
    "load_revisitop",
    "load_sfm_db",
    "load_ukbench",
    "pair_labels_path",
    "pixel_gt_dir",
    "read_class_folders",
    "read_gldv2_solution",
    "read_gldv2_train",
    "read_labelled_images",
    "read_labelme",
    "read_pair_labels",
    "read_positives_sidecar",
    "read_revisitop1m_list",
    "read_sfm_db",
    "read_whiten_pairs",
    "sfm_db_path",
    "sfm_dir",
    "sfm_ims_dir",
    "sfm_whiten_path",
    "test_dir",
    "write_generic_groundtruth",
    "write_gldv2_train_csv",
    "write_labelme",
    "write_oxford_gnd",
    "write_pair_labels",
    "write_positives_sidecar",
    "write_revisitop_gnd",
    "write_sfm_db",
    "write_whiten_pairs",
]
