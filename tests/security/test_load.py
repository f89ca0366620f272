"""The search server under load: large uploads stay cheap, many clients are all answered.

Issue 16, items 1 (memory of a legal large upload) and 5 (backlog, a bounded pool, slow queries).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from retrieval.search.server import SearchServer
from tests.security.hostile import Client, multipart, traced_peak

CLIENTS = 50


def top_hit(html: str) -> str:
    """The path of the first result of a page."""
    start = html.index('data-rank="1"')
    start = html.index('<div class="path">', start) + len('<div class="path">')
    return html[start : html.index("</div>", start)]


def test_a_large_legal_upload_is_streamed_not_held(client, photos):
    # Before: the body was read whole and parsed by copies (+770 MB for 60 MB).
    image = photos[2].read_bytes() + b"\0" * (40 * 2**20)  # a JPEG ends at its EOI marker
    content_type, body = multipart(image, "big.jpg")
    head = f"POST /search HTTP/1.1\r\nHost: {client.host}\r\nContent-Type: {content_type}\r\n"
    raw = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with traced_peak() as peak:  # the request is built before: only the server is measured
        reply = client.send_raw(raw)
    assert reply.status == 200
    assert top_hit(reply.body) == str(photos[2])
    assert peak[0] < len(body) / 4, f"peak {peak[0] / 2**20:.0f} MB for {len(body) >> 20} MB"


def test_fifty_concurrent_clients_are_all_answered_correctly(server, photos):
    # Before: a listen backlog of 5 reset 2-4 of 20 parallel uploads.
    assert server.request_queue_size >= 128
    client = Client(server)

    def query(i: int) -> str:
        target = photos[i % len(photos)]
        if i % 2:
            reply = client.upload(target.read_bytes(), f"q{i}.jpg")
        else:
            reply = client.get(f"/search?path={quote(str(target))}&k=2")
        assert reply.status == 200, reply.error
        return top_hit(reply.body)

    start = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        tops = list(pool.map(query, range(CLIENTS), timeout=120))
    assert tops == [str(photos[i % len(photos)]) for i in range(CLIENTS)]
    assert time.monotonic() - start < 120


def test_result_links_are_answered_while_an_upload_is_slow(server, photos, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    original = server.searcher.describe

    def slow(image, box=None):
        entered.set()
        release.wait(timeout=20)
        return original(image, box)

    monkeypatch.setattr(server.searcher, "describe", slow)
    client = Client(server)
    uploads: list[int] = []
    upload = threading.Thread(
        target=lambda: uploads.append(client.upload(photos[0].read_bytes()).status)
    )
    upload.start()
    try:
        assert entered.wait(timeout=20)
        start = time.monotonic()
        reply = client.get(f"/search?path={quote(str(photos[1]))}&k=2")
        assert reply.status == 200 and top_hit(reply.body) == str(photos[1])
        assert time.monotonic() - start < 5, "a result link waited for the slow upload"
    finally:
        release.set()
        upload.join(timeout=30)
    assert uploads == [200]


def test_a_silent_client_does_not_block_the_others(server, client):
    with client.connect():  # connects and never sends a byte
        assert client.get("/").status == 200


def test_connections_beyond_the_pool_are_told_to_retry(searcher):
    server = SearchServer(("127.0.0.1", 0), searcher, k=2, max_connections=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = Client(server)
    try:
        with client.connect():  # holds the only worker
            time.sleep(0.2)
            reply = client.get("/")
        assert reply.status == 503 and reply.headers.get("retry-after")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()
