"""Search your own photos: an incremental FAISS index of a folder, queries, a result page, a server.

``store`` keeps the index directory (descriptors, FAISS index and metadata, written atomically),
``engine`` answers queries, ``html`` renders result pages and ``server`` is the local web page;
``retrieval.search.cli`` is the ``retrieval-search`` command on top of them.

The names below are imported on first use: importing the package (as ``retrieval-search --help``
does) loads neither torch nor FAISS.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval.search.engine import Hit, Searcher
    from retrieval.search.errors import NetworkMismatchError, SearchError
    from retrieval.search.store import IndexStore, UpdateReport, update_index

_HOMES = {
    "Hit": "engine",
    "IndexStore": "store",
    "NetworkMismatchError": "errors",
    "SearchError": "errors",
    "Searcher": "engine",
    "UpdateReport": "store",
    "update_index": "store",
}
__all__ = [
    "Hit",
    "IndexStore",
    "NetworkMismatchError",
    "SearchError",
    "Searcher",
    "UpdateReport",
    "update_index",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module when it is first asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
