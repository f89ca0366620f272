"""What can stop an SfM run, each with the fix in its message."""

from __future__ import annotations

PIP_EXTRA = 'pip install -e ".[sfm]"'


class SfmError(RuntimeError):
    """An SfM run that cannot go on; the message says why and what to try."""


class SfmInputError(SfmError, ValueError):
    """The photo folder cannot make a training set (empty, a single image, all unreadable)."""


class NoModelError(SfmError):
    """COLMAP built no 3D model large enough: the photos do not overlap (enough)."""


class MissingPycolmapError(SfmError, ImportError):
    """COLMAP's Python bindings are not installed."""


def require_pycolmap():  # noqa: ANN201 (the module, typed only where pycolmap is installed)
    """The ``pycolmap`` module, or an error naming the pip command that installs it."""
    try:
        import pycolmap
    except ImportError as err:
        raise MissingPycolmapError(
            "python -m retrieval.data sfm needs COLMAP's Python bindings (pycolmap), which are not "
            f"installed: run  {PIP_EXTRA}  (or pip install pycolmap) and try again"
        ) from err
    return pycolmap
