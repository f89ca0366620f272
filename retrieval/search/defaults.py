"""The indexing defaults, apart from the code that needs torch: `--help` shows them at once."""

DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_POOLING = "gem"
# The extraction of evaluate.py (conf/evaluate.yaml), so that the tool and the benchmarks agree.
DEFAULT_IMAGE_SIZE = 1024
DEFAULT_SCALES = (1.0, 2**-0.5, 0.5)
