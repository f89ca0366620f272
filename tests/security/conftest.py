"""The real `retrieval-search serve` server on a loopback port, shared by the security tests.

The server thread must stop by itself when the session ends.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from retrieval.search import Searcher, update_index
from retrieval.search.server import SearchServer, make_server
from tests.security.hostile import Client, photo


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four indexed photos, 64 x 48."""
    root = tmp_path_factory.mktemp("security_photos")
    return [photo(root / f"photo{i}.jpg", i) for i in range(4)]


@pytest.fixture(scope="session")
def searcher(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Searcher:
    """The index of `photos` (64-pixel images, one scale) with its network, on the CPU."""
    index = tmp_path_factory.mktemp("security_index")
    update_index(photos[0].parent, index, image_size=64, scales=(1.0,), progress=False)
    return Searcher(index, device="cpu")


@pytest.fixture(scope="session")
def server(searcher: Searcher) -> Iterator[SearchServer]:
    """The real server on a free loopback port; it must stop by itself afterwards."""
    server = make_server(searcher, port=0, k=3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the server thread did not stop"


@pytest.fixture
def client(server: SearchServer) -> Client:
    return Client(server)


@pytest.fixture
def small_jpeg() -> bytes:
    """A 64 x 48 JPEG that is not in the index."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 30, 200)).save(buffer, "JPEG")
    return buffer.getvalue()
