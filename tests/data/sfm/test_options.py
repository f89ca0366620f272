"""Options are checked where they are built; without pycolmap the error names the pip command."""

from __future__ import annotations

import sys

import pytest

from retrieval.data.sfm import MAX_SCALE, MIN_OVERLAP, SfmOptions, require_pycolmap
from retrieval.data.sfm.errors import MissingPycolmapError


def test_defaults_are_the_published_positive_rule():
    options = SfmOptions()
    assert (options.min_overlap, options.max_scale) == (MIN_OVERLAP, MAX_SCALE) == (0.2, 1.5)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pairs_k", 0, "pairs_k must be an integer >= 1"),
        ("min_model_size", 1, "min_model_size must be an integer >= 2"),
        ("min_overlap", 0.0, r"min_overlap must be in \(0, 1\]"),
        ("max_scale", 0.5, "max_scale must be >= 1"),
        ("val_fraction", 1.0, r"val_fraction must be in \[0, 1\)"),
        ("name", "../x", "plain folder name"),
    ],
)
def test_bad_options_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        SfmOptions(**{field: value})


def test_without_pycolmap_the_error_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap raises ImportError
    with pytest.raises(MissingPycolmapError, match=r'pip install -e "\.\[sfm\]"'):
        require_pycolmap()
