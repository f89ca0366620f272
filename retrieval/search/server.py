"""A small local web page over an index: upload an image (or click a result), see its neighbours.

Standard library only (``http.server``); bound to 127.0.0.1 by default, as it shows the indexed
photos to whoever can reach it. Routes::

    GET  /                      the upload form
    POST /search                multipart form: image (file), k, box ("x1 y1 x2 y2", optional)
    GET  /search?path=P&k=K     the neighbours of an indexed image (the links of the results)
"""

from __future__ import annotations

import logging
import tempfile
import threading
from email import policy
from email.parser import BytesParser
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from retrieval.search.engine import Hit, Searcher
from retrieval.search.html import error_section, page, query_section, results_section, thumbnail_uri
from retrieval.search.store import IMAGE_SUFFIXES, SearchError
from retrieval.types import Box

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 2**20
TITLE = "retrieval-search"


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """{field name: (file name or None, bytes)} of a multipart/form-data body."""
    header = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=policy.HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise ValueError("expected a multipart/form-data body")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def parse_box(text: str) -> Box | None:
    """'x1 y1 x2 y2' (spaces or commas) as a box; empty gives None."""
    values = text.replace(",", " ").split()
    if not values:
        return None
    if len(values) != 4:
        raise ValueError(f"a box is 4 numbers x1 y1 x2 y2, got {text!r}")
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


class SearchServer(ThreadingHTTPServer):
    """An HTTP server holding one Searcher; queries run one at a time (one network)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], searcher: Searcher, k: int = 10) -> None:
        super().__init__(address, SearchHandler)
        self.searcher = searcher
        self.k = k
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class SearchHandler(BaseHTTPRequestHandler):
    """The routes of the search page."""

    server: SearchServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        log.info("%s %s", self.address_string(), format % args)

    # -- responses ---------------------------------------------------------------------------

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
        with self.server.lock:
            count = len(self.server.searcher)
        return (
            f'<form id="search-form" action="/search" method="post" enctype="multipart/form-data">'
            f'<label>Image <input type="file" id="image" name="image" accept="image/*,{accept}" '
            f"required></label> "
            f'<label>Box <input type="text" id="box" name="box" size="14" '
            f'placeholder="x1 y1 x2 y2" value="{escape(box)}"></label> '
            f'<label>k <input type="number" id="k" name="k" min="1" max="1000" value="{k}">'
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
        self._send(page(TITLE, self._form(), error_section(message)), status)

    # -- routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(page(TITLE, self._form()))
        elif url.path == "/search":
            query = parse_qs(url.query)
            try:
                path = query["path"][0]
                k = int(query.get("k", [self.server.k])[0])
                with self.server.lock:
                    self.server.searcher.reload_if_changed()
                    hits = self.server.searcher.search_path(path, k)
            except (KeyError, ValueError, SearchError) as err:
                self._error(f"bad query: {err}")
                return
            self._send(self._results(path, thumbnail_uri(path, 320), None, hits, k))
        else:
            self._error(f"no page {url.path}", HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        if urlsplit(self.path).path != "/search":
            self._error(f"no page {self.path}", HTTPStatus.NOT_FOUND)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD_BYTES:
            self._error(f"upload too large ({length} bytes)", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        body = self.rfile.read(length)
        try:
            fields = parse_multipart(self.headers.get("Content-Type", ""), body)
            filename, data = fields.get("image", (None, b""))
            if not data:
                raise ValueError("choose an image to upload")
            k = int(fields.get("k", (None, b""))[1] or self.server.k)
            box = parse_box(fields.get("box", (None, b""))[1].decode("utf-8"))
        except ValueError as err:
            self._error(str(err))
            return
        label = filename or "upload"
        suffix = Path(label).suffix.lower() if Path(label).suffix.lower() in IMAGE_SUFFIXES else ""
        # Extraction reads files by path, so the upload lives in a temporary file meanwhile.
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                with self.server.lock:
                    self.server.searcher.reload_if_changed()
                    hits = self.server.searcher.search_image(tmp.name, box, k)
            except (OSError, ValueError, SearchError) as err:
                self._error(f"cannot search with {label}: {err}")
                return
            uri = thumbnail_uri(tmp.name, 320, box)
        self._send(self._results(label, uri, box, hits, k))


def make_server(
    searcher: Searcher, host: str = "127.0.0.1", port: int = 8000, k: int = 10
) -> SearchServer:
    """A SearchServer bound to host:port (port 0 picks a free one); call serve_forever()."""
    return SearchServer((host, port), searcher, k)
