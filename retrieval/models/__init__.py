"""The retrieval network: backbones, poolings, whitening. Knows nothing of Lightning, Hydra or files."""
