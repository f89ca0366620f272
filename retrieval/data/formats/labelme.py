"""labelme JSON annotations: polygons on one image (the pixel ground truth's label files)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval.data.formats.checks import DatasetFormatError
from retrieval.data.formats.text import write_text


def write_labelme(
    path: str | Path,
    polygons: Sequence[np.ndarray],
    image_size: tuple[int, int],
    image_path: str,
    label: str = "object",
) -> None:
    """Write polygons ((x, y) points) as a labelme JSON file; image_size is (W, H)."""
    shapes = [
        {
            "label": label,
            "points": np.asarray(p, dtype=np.float64).reshape(-1, 2).tolist(),
            "group_id": None,
            "shape_type": "polygon",
            "flags": {},
        }
        for p in polygons
    ]
    doc = {
        "version": "5.0.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageWidth": int(image_size[0]),
        "imageHeight": int(image_size[1]),
    }
    write_text(path, json.dumps(doc))


def read_labelme(path: str | Path) -> tuple[list[np.ndarray], tuple[int, int] | None]:
    """Polygons ((x, y) float arrays; rectangles as 4 corners) and (W, H) of a labelme file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        polygons = []
        for shape in doc["shapes"]:
            points = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
            if shape.get("shape_type") == "rectangle" and len(points) == 2:
                (x1, y1), (x2, y2) = points
                points = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
            polygons.append(points)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetFormatError(f"{path}: not a labelme annotation ({err})") from err
    size = None
    if doc.get("imageWidth") and doc.get("imageHeight"):
        size = (int(doc["imageWidth"]), int(doc["imageHeight"]))
    return polygons, size
