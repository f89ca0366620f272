"""One file over HTTP(S)/FTP: resumable ``.part`` transfers, retries and checksum verification."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A dataset file could not be downloaded, verified or extracted."""


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, url: str, sha256: str | None, md5: str | None) -> None:
    """Raise DownloadError (and delete ``path``) when a known checksum does not match."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if not expected:
            continue
        actual = _file_digest(path, algorithm)
        if actual.lower() != expected.lower():
            path.unlink(missing_ok=True)
            raise DownloadError(
                f"{algorithm} mismatch for {url}: expected {expected}, got {actual}; "
                f"the corrupt file {path} was deleted, run the download again"
            )


def _total_from_content_range(value: str | None) -> int | None:
    match = re.match(r"bytes (\d+|\*)-?(\d*)/(\d+)", value or "")
    return int(match.group(3)) if match else None


def _transfer_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One HTTP(S)/FTP attempt appending to ``part`` (resumed with a Range request)."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "retrieval-downloader/1"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        total = _total_from_content_range(err.headers.get("Content-Range"))
        if err.code == 416 and start and total == start:
            return  # the previous attempt already got every byte
        if err.code == 416:
            part.unlink()
        raise
    with response:
        resumed = start > 0 and getattr(response, "status", None) == 206
        if start and not resumed:
            logger.info("server ignored the Range request for %s; restarting", url)
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with (
            part.open("ab" if resumed else "wb") as handle,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=None if progress else True,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                handle.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` through a resumable ``.part`` file and verify its checksum."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer_once(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 416, 429):
                raise DownloadError(
                    f"could not download {url} to {dest}: HTTP {err.code} {err.reason}; "
                    "check the URL or whether the dataset moved"
                ) from err
            failure: Exception = err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            failure = err
        if attempt == retries:
            raise DownloadError(
                f"could not download {url} to {dest} after {retries + 1} attempt(s): {failure}. "
                f"Check the network connection; rerunning resumes from {part}"
            ) from failure
        logger.warning("download of %s interrupted (%s); retrying", url, failure)
        time.sleep(retry_wait * (attempt + 1))
    _verify(part, url, sha256, md5)
    os.replace(part, dest)
    return dest
