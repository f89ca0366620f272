"""Search your own photos: an incremental FAISS index of a folder, queries, a result page, a server.

``store`` keeps the index directory (descriptors, FAISS index and metadata, written atomically),
``engine`` answers queries, ``html`` renders result pages and ``server`` is the local web page;
``retrieval.search.cli`` is the ``retrieval-search`` command on top of them.
"""

from retrieval.search.engine import Hit, Searcher
from retrieval.search.errors import NetworkMismatchError, SearchError
from retrieval.search.store import IndexStore, UpdateReport, update_index

__all__ = [
    "Hit",
    "IndexStore",
    "NetworkMismatchError",
    "SearchError",
    "Searcher",
    "UpdateReport",
    "update_index",
]
