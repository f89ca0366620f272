"""A raw HTTP client for hostile requests to the search server, and memory measurement.

It speaks HTTP over a plain socket, so it can send what urllib and browsers will not (no
Content-Length, a negative one, a forged Host or Origin). Every socket has a timeout.
"""

from __future__ import annotations

import contextlib
import html
import socket
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from retrieval.search.server import SearchServer
from tests.search.helpers import photo  # noqa: F401  (re-exported for the security tests)

TIMEOUT = 30.0
BOUNDARY = "SecurityTestBoundary"


@dataclass
class Reply:
    """A parsed HTTP response (header names lower-cased)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    @property
    def error(self) -> str:
        """The text of the page's error paragraph ('' when there is none)."""
        start = self.body.find('id="error">')
        if start < 0:
            return ""
        start += len('id="error">')
        return html.unescape(self.body[start : self.body.index("</p>", start)])


def parse_reply(raw: bytes) -> Reply:
    """Status, headers and body of a raw HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        raise AssertionError(f"no HTTP response, got {raw[:200]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(lines[0].split()[1]), headers, body.decode("utf-8", "replace"))


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class Client:
    """Raw HTTP/1.1 requests to one server, one connection each."""

    def __init__(self, server: SearchServer) -> None:
        self.server = server
        self.port = server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        """A connected socket with the test's timeout."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)

    def send_raw(self, data: bytes) -> Reply:
        """Send bytes as they are; parse what comes back."""
        with self.connect() as sock:
            sock.sendall(data)
            return parse_reply(read_all(sock))

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        length: str | None = "auto",
    ) -> Reply:
        """One request; Host defaults to the bound address, Content-Length to the body's."""
        fields = {"Host": self.host, "Connection": "close"}
        if length == "auto":
            if body or method == "POST":
                fields["Content-Length"] = str(len(body))
        elif length is not None:
            fields["Content-Length"] = length
        fields.update(headers or {})
        head = f"{method} {target} HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value)
        return self.send_raw(head.encode("latin-1") + b"\r\n" + body)

    def get(self, target: str, **kwargs) -> Reply:
        return self.request("GET", target, **kwargs)

    def upload(
        self,
        image: bytes,
        filename: str = "query.jpg",
        k: str | None = None,
        box: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """POST /search with the multipart form of the page."""
        content_type, body = multipart(image, filename, k, box)
        return self.request(
            "POST", "/search", body, headers={"Content-Type": content_type, **(headers or {})}
        )


def multipart(
    image: bytes, filename: str = "query.jpg", k: str | None = None, box: str | None = None
) -> tuple[str, bytes]:
    """(Content-Type, body) of the search form."""
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + image
    for name, value in (("k", k), ("box", box)):
        if value is not None:
            body += (
                f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}'
            ).encode()
    body += f"\r\n--{BOUNDARY}--\r\n".encode()
    return f"multipart/form-data; boundary={BOUNDARY}", body


def png_header_bomb(width: int, height: int) -> bytes:
    """A tiny PNG that declares width x height pixels (a decompression bomb to Pillow)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + (chunk(b"IEND", b""))
    )


@contextlib.contextmanager
def traced_peak() -> Iterator[list[int]]:
    """Peak Python memory (bytes, all threads) allocated inside the block: [peak] after it."""
    result: list[int] = []
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
