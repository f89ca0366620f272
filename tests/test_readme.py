"""The README's Python blocks run as written (offline, in an empty folder), so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch.hub

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    """Every ```python block of README.md, in order."""
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_blocks() -> None:
    assert python_blocks(), "README.md lost its Python examples"


def test_readme_python_blocks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block runs after the previous ones in one namespace, as a reader runs them."""

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a README example downloads weights; the examples must run offline")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for number, code in enumerate(python_blocks(), start=1):
        exec(compile(code, f"README.md python block {number}", "exec"), namespace)
