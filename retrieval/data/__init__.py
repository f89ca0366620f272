"""Datasets: real formats, the synthetic SfM world, tuples and datamodules."""
