"""The retrieval network (backbones, poolings, whitening): no Lightning, Hydra or files."""
