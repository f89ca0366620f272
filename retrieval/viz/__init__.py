"""Pictures: retrieval grids, activation maps, matching regions."""
