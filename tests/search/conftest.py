"""Fixtures of the retrieval-search tests."""

from __future__ import annotations

import pytest

import retrieval.search.store as store_module


@pytest.fixture
def extracted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the index extracts, in order (spying on extract_descriptors)."""
    seen: list[str] = []
    original = store_module.extract_descriptors

    def spy(net, paths, **kwargs):
        seen.extend(str(p) for p in paths)
        return original(net, paths, **kwargs)

    monkeypatch.setattr(store_module, "extract_descriptors", spy)
    return seen
