"""search/upload.py: the search form received safely (Content-Length, multipart, box, k)."""

from __future__ import annotations

import io
from email.message import Message
from pathlib import Path

import pytest

from retrieval.search.upload import (
    MAX_UPLOAD_BYTES,
    UploadError,
    body_length,
    parse_box,
    parse_k,
    receive_form,
)

BODY = (
    b'--b\r\nContent-Disposition: form-data; name="image"; filename="../../dir/q.jpg"\r\n\r\n'
    b"JPEGDATA\r\n"
    b'--b\r\nContent-Disposition: form-data; name="box"\r\n\r\n1, 2 3 4\r\n'
    b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nignored\r\n--b--\r\n'
)


def headers(**values: str) -> Message:
    message = Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


def test_the_form_is_streamed_to_a_temporary_file_and_removed_after(tmp_path):
    form_type = "multipart/form-data; boundary=b"
    with receive_form(io.BytesIO(BODY), len(BODY), form_type, str(tmp_path)) as form:
        assert form.filename == "q.jpg"  # the name only: never a path of the client's
        assert form.path.parent == tmp_path and form.path.read_bytes() == b"JPEGDATA"
        assert form.fields == {"box": "1, 2 3 4"}
        path = form.path
    assert not Path(path).exists()
    assert parse_box(form.fields["box"]) == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (BODY, "text/plain", "multipart/form-data"),
        (BODY, "multipart/form-data", "boundary"),
        (BODY[:40], "multipart/form-data; boundary=b", "ended"),
        (BODY.replace(b"JPEGDATA", b""), "multipart/form-data; boundary=b", "choose an image"),
        (BODY.replace(b"1, 2 3 4", b"9" * 5000), "multipart/form-data; boundary=b", "longer"),
    ],
)
def test_a_bad_form_is_refused(tmp_path, body, content_type, fragment):
    stream = io.BytesIO(body)
    with (
        pytest.raises(UploadError, match=fragment),
        receive_form(stream, len(body), content_type, str(tmp_path)),
    ):
        pass
    assert list(tmp_path.iterdir()) == []  # nothing left behind


@pytest.mark.parametrize(
    ("values", "status"),
    [
        ({}, 411),
        ({"Content_Length": "-1"}, 400),
        ({"Content_Length": "abc"}, 400),
        ({"Content_Length": "12", "Transfer_Encoding": "chunked"}, 411),
        ({"Content_Length": str(MAX_UPLOAD_BYTES + 1)}, 413),
    ],
)
def test_content_length_is_checked(values, status):
    with pytest.raises(UploadError) as err:
        body_length(headers(**values))
    assert err.value.status == status


def test_box_and_k_fields():
    assert parse_box("  ") is None
    assert parse_box("1, 2 3 4") == (1.0, 2.0, 3.0, 4.0)
    for text in ("1 2 3", "a b c d", "1 2 3 4 5"):
        with pytest.raises(ValueError, match="4 numbers"):
            parse_box(text)
    assert parse_k(None, 7) == 7 and parse_k(" 12 ", 7) == 12
    for text in ("abc", "0", "1001", "-1", "2.5"):
        with pytest.raises(ValueError, match="k must be"):
            parse_k(text, 7)
