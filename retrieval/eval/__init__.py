"""Evaluation: exact benchmark protocols and metrics (plain numpy)."""
