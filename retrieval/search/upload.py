"""The search page's form, received safely: a bounded, streamed upload and checked fields.

The body is parsed as it arrives (python-multipart's streaming parser): the image goes straight to
a temporary file, the small fields (k, box) to memory with a size cap, so a request never holds
more than one chunk of its body in memory. Every refusal is an `UploadError` with its HTTP status
and a message for people, naming the uploaded file (never the server's temporary file).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header

from retrieval.data.formats import IMAGE_SUFFIXES
from retrieval.types import Box

MAX_UPLOAD_BYTES = 64 * 2**20
MAX_K = 1000
CHUNK_BYTES = 2**20
MAX_FIELD_BYTES = 1024  # k and box are a few characters
MAX_PARTS = 8  # image, k, box and a few a browser may add
FIELDS = ("k", "box")
LENGTH = re.compile(r"[0-9]{1,20}")


class UploadError(ValueError):
    """A request refused with `status` and a message for people."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


def body_length(headers: Message) -> int:
    """The Content-Length of a form post, checked before a byte of the body is read."""
    if headers.get("Transfer-Encoding"):
        raise UploadError(
            "send the form with a Content-Length header (chunked uploads are not accepted)",
            HTTPStatus.LENGTH_REQUIRED,
        )
    values = [value.strip() for value in headers.get_all("Content-Length") or [] if value.strip()]
    if not values:
        raise UploadError(
            "the upload has no Content-Length header: send it from the page's form",
            HTTPStatus.LENGTH_REQUIRED,
        )
    if len(set(values)) > 1 or not LENGTH.fullmatch(values[0]):
        raise UploadError(f"Content-Length must be one number of bytes, got {', '.join(values)}")
    length = int(values[0])
    if length > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"the upload is {length} bytes (Content-Length); at most 64 MB "
            f"({MAX_UPLOAD_BYTES} bytes) is accepted: send a smaller image",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    return length


def form_boundary(content_type: str) -> bytes:
    """The boundary of a multipart/form-data Content-Type."""
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise UploadError("send the search form as multipart/form-data (the page's form does)")
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError("the multipart/form-data Content-Type has no boundary")
    return boundary


@dataclass
class Upload:
    """The received form: the image's file name and temporary path, and the small fields."""

    filename: str = ""
    path: Path | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How messages name the upload: its file name on the user's machine."""
        return self.filename or "the upload"


class _FormReceiver:
    """Callbacks of the streaming parser: the image part to a file, the small fields to memory."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.image_file: BinaryIO | None = None
        self.filename = ""
        self.fields: dict[str, bytearray] = {}
        self.parts = 0
        self.ended = False
        self._target: BinaryIO | bytearray | None = None
        self._name, self._value = bytearray(), bytearray()
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self._name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadError(f"the form has more than {MAX_PARTS} parts")
        self._headers, self._target = {}, None

    def on_header_end(self) -> None:
        self._headers[bytes(self._name).strip().lower()] = bytes(self._value).strip()
        self._name, self._value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == "image":
            if self.image_file is not None:
                raise UploadError("the form has more than one image; upload one")
            self.filename = Path(params.get(b"filename", b"").decode("utf-8", "replace")).name
            suffix = Path(self.filename).suffix.lower()
            self.image_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by receive_form)
                prefix="retrieval-upload-",
                suffix=suffix if suffix in IMAGE_SUFFIXES else "",
                dir=self.directory,
                delete=False,
            )
            self._target = self.image_file
        elif name in FIELDS:
            self._target = self.fields.setdefault(name, bytearray())
        # Any other part is skipped: counted by Content-Length, never kept.

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if isinstance(self._target, bytearray):
            self._target.extend(data[start:end])
            if len(self._target) > MAX_FIELD_BYTES:
                raise UploadError(f"a form field is longer than {MAX_FIELD_BYTES} bytes")
        elif self._target is not None:
            self._target.write(data[start:end])

    def on_end(self) -> None:
        self.ended = True


@contextmanager
def receive_form(
    stream: BinaryIO, length: int, content_type: str, directory: str | None = None
) -> Iterator[Upload]:
    """Read `length` bytes of the search form from `stream`; the image file is removed after."""
    receiver = _FormReceiver(directory)
    try:
        parser = MultipartParser(form_boundary(content_type), receiver.callbacks())
        _feed(parser, stream, length)
        if not receiver.ended:
            raise UploadError("the form ended early: send it again from the page")
        if receiver.image_file is None or receiver.image_file.tell() == 0:
            raise UploadError("choose an image to upload")
        receiver.image_file.close()
        yield Upload(
            receiver.filename,
            Path(receiver.image_file.name),
            {name: value.decode("utf-8", "replace") for name, value in receiver.fields.items()},
        )
    finally:
        if receiver.image_file is not None:
            receiver.image_file.close()
            with suppress(FileNotFoundError):
                Path(receiver.image_file.name).unlink()


def _feed(parser: MultipartParser, stream: BinaryIO, length: int) -> None:
    """Pass `length` bytes of `stream` to the parser, one chunk at a time."""
    remaining = length
    try:
        while remaining:
            chunk = stream.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                raise UploadError(
                    f"the upload ended after {length - remaining} of its {length} bytes"
                )
            parser.write(chunk)
            remaining -= len(chunk)
    except TimeoutError:
        raise UploadError("the upload stalled: send it again", HTTPStatus.REQUEST_TIMEOUT) from None
    except UploadError:
        raise
    except ValueError as err:  # python-multipart's errors are ValueErrors
        raise UploadError(f"the body is not a valid multipart/form-data form ({err})") from None


def parse_box(text: str) -> Box | None:
    """'x1 y1 x2 y2' (spaces or commas) as 4 numbers; '' is None (transforms.clip_box checks it)."""
    values = text.replace(",", " ").split()
    if not values:
        return None
    try:
        box = tuple(float(v) for v in values)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ValueError(f"a box is 4 numbers x1 y1 x2 y2, got {text.strip()!r}")
    return box


def parse_k(text: str | None, default: int) -> int:
    """The number of results: a whole number from 1 to MAX_K (None or '' gives `default`)."""
    if text is None or not text.strip():
        return default
    if not re.fullmatch(r"[0-9]{1,7}", text.strip()) or not 1 <= int(text) <= MAX_K:
        raise ValueError(f"k must be a whole number from 1 to {MAX_K}, got {text.strip()!r}")
    return int(text)


def image_size(upload: Upload) -> tuple[int, int]:
    """(W, H) of the uploaded image, read from its header; refused when unreadable or huge."""
    try:
        with Image.open(upload.path) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        width = height = None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        suffixes = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
        raise ValueError(f"it is not an image this server can read ({suffixes})") from None
    if width is None or width * height > Image.MAX_IMAGE_PIXELS:
        raise ValueError(
            f"it has too many pixels (at most {Image.MAX_IMAGE_PIXELS} are decoded): "
            "send a smaller image"
        )
    return width, height
