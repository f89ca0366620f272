"""Self-contained HTML result pages: thumbnails embedded as base64 JPEG, no external files."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

from PIL import Image, ImageDraw

from retrieval.atomic import atomic_write
from retrieval.data.transforms import to_rgb
from retrieval.search.engine import Hit
from retrieval.types import Box

log = logging.getLogger(__name__)

THUMB_SIDE = 200

STYLE = """
body { font-family: sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
.query img { border: 3px solid #36c; max-width: 320px; }
ol.results { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 12px; }
li.result { width: 210px; background: #fff; border: 1px solid #ddd; padding: 5px; }
li.result img { max-width: 200px; max-height: 200px; display: block; margin: auto; }
.rank { font-weight: bold; } .score { color: #555; }
.path { font-size: 0.75em; word-break: break-all; }
.error { color: #b00; font-weight: bold; }
form { background: #fff; border: 1px solid #ddd; padding: 10px; display: inline-block; }
"""


def thumbnail_uri(path: str | Path, side: int = THUMB_SIDE, box: Box | None = None) -> str | None:
    """A JPEG thumbnail as a data: URI (a box drawn on it), or None when it cannot be read."""
    try:
        with Image.open(path) as img:
            full_width = img.width
            img.draft("RGB", (side, side))  # JPEG: decode at a reduced scale, much faster
            thumb = to_rgb(img)  # 16-bit and float photos scaled, not clipped to white
    except (OSError, ValueError, SyntaxError) as err:
        log.warning("no thumbnail for %s (%s)", path, err)
        return None
    if box is not None:
        scale = thumb.width / full_width
        width = max(2, round(3 * thumb.width / side))
        ImageDraw.Draw(thumb).rectangle([v * scale for v in box], outline="#36c", width=width)
    thumb.thumbnail((side, side))
    buffer = io.BytesIO()
    thumb.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(uri: str | None, alt: str) -> str:
    if uri is None:
        return f'<span class="error">(unreadable: {escape(alt)})</span>'
    return f'<img src="{uri}" alt="{escape(alt)}">'


def query_section(label: str, uri: str | None, box: Box | None = None) -> str:
    """The query image and its name."""
    where = f" (box {' '.join(f'{v:g}' for v in box)})" if box is not None else ""
    return (
        f'<section class="query"><h2>Query</h2>{_img(uri, label)}'
        f'<div class="path" id="query-path">{escape(label)}{escape(where)}</div></section>'
    )


def results_section(hits: Sequence[Hit], link: Callable[[Hit], str] | None = None) -> str:
    """The ranked results with thumbnails, scores and paths; `link` gives each one's href."""
    items = []
    for hit in hits:
        thumb = _img(thumbnail_uri(hit.path), Path(hit.path).name)
        if link is not None:
            thumb = f'<a href="{escape(link(hit))}">{thumb}</a>'
        items.append(
            f'<li class="result" data-rank="{hit.rank}" data-row="{hit.row}">{thumb}'
            f'<div><span class="rank">#{hit.rank}</span> '
            f'<span class="score">{hit.score:.4f}</span></div>'
            f'<div class="path">{escape(hit.path)}</div></li>'
        )
    if not items:
        return '<section><h2>Results</h2><p id="no-results">No results.</p></section>'
    return f'<section><h2>Results</h2><ol class="results">{"".join(items)}</ol></section>'


def error_section(message: str) -> str:
    """An error message shown on the page."""
    return f'<p class="error" id="error">{escape(message)}</p>'


def page(title: str, *sections: str) -> str:
    """A complete HTML document."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def write_results_page(
    out: str | Path, query: str | Path, hits: Sequence[Hit], box: Box | None = None
) -> Path:
    """Write the page of one query's results (thumbnails link to the original files)."""
    body = page(
        f"retrieval-search: {Path(query).name}",
        query_section(str(query), thumbnail_uri(query, 320, box), box),
        results_section(hits, link=lambda hit: Path(hit.path).as_uri()),
    )
    return atomic_write(out, lambda handle: handle.write(body.encode("utf-8")))
