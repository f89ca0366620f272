"""A small local web page over an index: upload an image (or click a result), see its neighbours.

Standard library HTTP (``http.server``), bound to 127.0.0.1 by default, as it shows the indexed
photos to whoever can reach it. Routes::

    GET  /                      the upload form
    POST /search                multipart form: image (file), k, box ("x1 y1 x2 y2", optional)
    GET  /search?path=P&k=K     the neighbours of an indexed image (the links of the results)

Threat model (README, "Searching your own photos"): a local tool for one user. It answers only
Host names of its own address (no DNS rebinding), refuses cross-origin form posts, sends a strict
Content-Security-Policy, streams uploads to a temporary file under a 64 MB limit, and serves at
most `max_connections` requests at once (the network runs one query at a time).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Sequence
from contextlib import suppress
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from PIL import Image

from retrieval.data.formats import IMAGE_SUFFIXES
from retrieval.data.transforms import clip_box
from retrieval.search.engine import Hit, Searcher
from retrieval.search.errors import SearchError
from retrieval.search.html import (
    STYLE,
    error_section,
    page,
    query_section,
    results_section,
    thumbnail_uri,
)
from retrieval.search.upload import (
    MAX_K,
    Upload,
    UploadError,
    body_length,
    image_size,
    parse_box,
    parse_k,
    receive_form,
)
from retrieval.types import Box

log = logging.getLogger(__name__)

TITLE = "retrieval-search"
MAX_CONNECTIONS = 64
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")
# The pages are self-contained: one inline style (by hash), data: thumbnails, no script at all.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        f"default-src 'none'; img-src data:; style-src 'sha256-{_STYLE_HASH}'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)
_BUSY = b"the server is busy: try again in a moment\n"


class SearchServer(ThreadingHTTPServer):
    """An HTTP server holding one Searcher: a bounded pool of request threads.

    The network describes one upload at a time (`network_lock`); reading or reloading the index
    takes `index_lock` only, so result links are answered while an upload is described.
    """

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst of clients waits instead of a reset

    def __init__(
        self,
        address: tuple[str, int],
        searcher: Searcher,
        k: int = 10,
        max_connections: int = MAX_CONNECTIONS,
        origins: Sequence[str] = (),
    ) -> None:
        self.searcher = searcher
        self.k = k
        # The public addresses of a reverse proxy in front: their Host and Origin are answered.
        self.origins = frozenset(public_origin(origin) for origin in origins)
        self.index_lock = threading.Lock()
        self.network_lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, SearchHandler)

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def process_request(self, request: socket.socket, client_address: tuple) -> None:
        """Serve in a thread while a slot is free; else answer 503 at once."""
        if not self.slots.acquire(blocking=False):
            _answer_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()  # no thread started: give its slot back
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def host_allowed(self, value: str | None) -> bool:
        """Whether a Host header names this server (DNS rebinding gives a foreign name)."""
        if value is None:
            return True  # HTTP/1.0 clients may omit it; browsers never do
        if any(value.lower() == urlsplit(origin).netloc for origin in self.origins):
            return True
        try:
            url = urlsplit("//" + value)
            name, port = url.hostname or "", url.port
        except ValueError:
            return False
        bound_host, bound_port = self.server_address[:2]
        if port is not None and port != bound_port:
            return False
        if name in LOCAL_NAMES or name == str(bound_host).lower():
            return True
        return str(bound_host) in WILDCARDS and _is_ip_address(name)


def public_origin(url: str) -> str:
    """'scheme://host[:port]' of a proxy's public address; a SearchError when it is not one."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
        raise SearchError(
            f"--origin {url!r} is not a public address like https://photos.example.com"
        )
    return f"{parts.scheme}://{parts.netloc}".lower()


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _answer_busy(request: socket.socket) -> None:
    """A short 503 written straight to a connection no thread will serve."""
    head = ["HTTP/1.0 503 Service Unavailable", "Retry-After: 1", "Connection: close"]
    head += [f"{name}: {value}" for name, value in SECURITY_HEADERS]
    head += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(_BUSY)}"]
    with suppress(OSError):
        request.settimeout(1)
        request.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + _BUSY)


class SearchHandler(BaseHTTPRequestHandler):
    """The routes of the search page."""

    server: SearchServer
    timeout = 20  # seconds a silent client may hold its connection
    default_request_version = "HTTP/1.0"  # not 0.9: even a garbled request line gets headers

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        log.info("%s %s", self.address_string(), format % args)

    # -- responses ---------------------------------------------------------------------------

    def end_headers(self) -> None:
        """Every response, http.server's own errors included, carries the security headers."""
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        super().end_headers()

    def _send(self, html: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        data = html.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _form(self, k: int | None = None, box: str = "") -> str:
        k = k or self.server.k
        accept = ",".join(sorted(IMAGE_SUFFIXES))
        with self.server.index_lock:
            count = len(self.server.searcher)
        return (
            f'<form id="search-form" action="/search" method="post" enctype="multipart/form-data">'
            f'<label>Image <input type="file" id="image" name="image" accept="image/*,{accept}" '
            f"required></label> "
            f'<label>Box <input type="text" id="box" name="box" size="14" '
            f'placeholder="x1 y1 x2 y2" value="{escape(box)}"></label> '
            f'<label>k <input type="number" id="k" name="k" min="1" max="{MAX_K}" value="{k}">'
            f'</label> <button type="submit" id="search">Search</button></form>'
            f'<p class="path">{count} indexed images</p>'
        )

    def _results(
        self, label: str, query_uri: str | None, box: Box | None, hits: list[Hit], k: int
    ) -> str:
        box_text = " ".join(f"{v:g}" for v in box) if box is not None else ""
        return page(
            TITLE,
            self._form(k, box_text),
            query_section(label, query_uri, box),
            results_section(
                hits, link=lambda hit: "/search?" + urlencode({"path": hit.path, "k": k})
            ),
        )

    def _error(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        self.close_connection = True  # a refused body may be unread: never parse it as a request
        self._send(page(TITLE, self._form(), error_section(message)), status)

    def _refused(self) -> bool:
        """Answer and return True when the request is not for this server or not from its page."""
        if not self.server.host_allowed(self.headers.get("Host")):
            self._error(
                "this server answers only its own address (Host: "
                f"{self.headers.get('Host')!r} is another); open {self.server.url}",
                HTTPStatus.MISDIRECTED_REQUEST,
            )
            return True
        if self.command == "POST" and not self._same_origin():
            self._error(
                "cross-origin form posts are refused: search from this server's own page",
                HTTPStatus.FORBIDDEN,
            )
            return True
        return False

    def _same_origin(self) -> bool:
        """Whether Origin (else Referer) names this page; requests without either are not forms."""
        source = self.headers.get("Origin") or self.headers.get("Referer")
        if source is None:
            return True
        url = urlsplit(source)
        if f"{url.scheme}://{url.netloc}".lower() in self.server.origins:
            return True
        host = (self.headers.get("Host") or "").lower()
        return url.scheme in ("http", "https") and bool(host) and url.netloc.lower() == host

    # -- routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self._refused():
            return
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(page(TITLE, self._form()))
        elif url.path == "/search":
            self._search_path(parse_qs(url.query))
        else:
            self._error(f"no page {url.path}", HTTPStatus.NOT_FOUND)

    def _search_path(self, query: dict[str, list[str]]) -> None:
        """The neighbours of an indexed image (a result link)."""
        path = query.get("path", [""])[0]
        try:
            if not path:
                raise ValueError("no image given: a result link is /search?path=IMAGE&k=K")
            k = parse_k(query.get("k", [None])[0], self.server.k)
            with self.server.index_lock:
                self.server.searcher.reload_if_changed()
                hits = self.server.searcher.search_path(path, k)
        except (ValueError, SearchError) as err:
            self._error(f"bad query: {err}")
            return
        self._send(self._results(path, thumbnail_uri(path, 320), None, hits, k))

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        if self._refused():
            return
        if urlsplit(self.path).path != "/search":
            self._error(f"no page {urlsplit(self.path).path}", HTTPStatus.NOT_FOUND)
            return
        try:
            length = body_length(self.headers)
            with receive_form(self.rfile, length, self.headers.get("Content-Type", "")) as form:
                self._search_upload(form)
        except UploadError as err:
            self._error(str(err), err.status)

    def _search_upload(self, form: Upload) -> None:
        """The neighbours of an uploaded image (optionally a box of it)."""
        try:
            k = parse_k(form.fields.get("k"), self.server.k)
            box = parse_box(form.fields.get("box", ""))
            size = image_size(form)  # from the header: a bad or huge image costs nothing
            box = None if box is None else clip_box(box, size)
            hits = self._describe_and_search(form, box, k)
        except (OSError, ValueError, OverflowError, SearchError, Image.DecompressionBombError) as e:
            # Messages name the user's file, never the server's temporary copy of it.
            message = str(e).replace(str(form.path), form.label)
            self._error(f"cannot search with {form.label}: {message}")
            return
        uri = thumbnail_uri(form.path, 320, box)
        self._send(self._results(form.label, uri, box, hits, k))

    def _describe_and_search(self, form: Upload, box: Box | None, k: int) -> list[Hit]:
        searcher = self.server.searcher
        with self.server.index_lock:
            searcher.reload_if_changed()
        with self.server.network_lock:
            descriptor = searcher.describe(form.path, box)
        with self.server.index_lock:
            return searcher.search(descriptor, k)[0]


def make_server(
    searcher: Searcher,
    host: str = "127.0.0.1",
    port: int = 8000,
    k: int = 10,
    origins: Sequence[str] = (),
) -> SearchServer:
    """A SearchServer bound to host:port (port 0 picks a free one); call serve_forever().

    `origins`: public addresses of a reverse proxy in front (https://photos.example.com).
    """
    try:
        return SearchServer((host, port), searcher, k, origins=origins)
    except socket.gaierror as err:
        raise SearchError(f"cannot listen on --host {host}: {err.strerror}") from None
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            reason = "is already in use (another server?)"
        elif err.errno == errno.EACCES:
            reason = "needs more permissions (ports below 1024 are for root)"
        elif err.errno == errno.EADDRNOTAVAIL:
            raise SearchError(f"cannot listen on --host {host}: not an address here") from None
        else:
            raise
        raise SearchError(
            f"port {port} on {host} {reason}: choose another with --port N, "
            "or --port 0 for a free one"
        ) from None
