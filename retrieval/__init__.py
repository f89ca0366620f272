"""Deep image retrieval: CNN global descriptors trained and evaluated with Lightning and Hydra."""

__version__ = "0.1.0"
