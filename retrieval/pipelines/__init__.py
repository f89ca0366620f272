"""End-to-end jobs behind the thin Hydra entry points."""
