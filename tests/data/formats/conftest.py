"""Fixtures of the format tests: empty stand-in image files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def touch() -> Callable[[list[Path]], None]:
    """touch(paths): create each file (and its folders) with two JPEG-looking bytes."""

    def create(paths: list[Path]) -> None:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\xff\xd8")

    return create


@pytest.fixture
def shared_folder(shared_data: Path) -> Callable[[str], Path]:
    """shared_folder(name): ../shared/data/<name>, or skip where it is absent."""

    def folder(name: str) -> Path:
        path = shared_data / name
        if not path.is_dir():
            pytest.skip(f"shared {name} absent")
        return path

    return folder
