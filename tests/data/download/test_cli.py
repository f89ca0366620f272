"""The download command line: a second run makes no request, --list, unknown names, --parts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from retrieval.data import download as D
from retrieval.data.download import cli


def test_second_run_makes_no_request(
    server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    toy_registry: dict[str, D.DatasetSpec],
) -> None:
    monkeypatch.setattr(cli, "REGISTRY", toy_registry)
    assert D.download_main(["toy", "--root", str(tmp_path)]) == 0
    made = len(server.requests)
    assert made == 3
    assert D.download_main(["toy", "--root", str(tmp_path)]) == 0
    assert len(server.requests) == made
    assert D.download_main(["toy", "--root", str(tmp_path), "--force"]) == 0
    assert len(server.requests) == 2 * made


def test_cli_list_unknown_name_and_parts(capsys: pytest.CaptureFixture[str]) -> None:
    assert D.download_main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in (
        "retrieval-sfm-120k",
        "roxford5k",
        "rparis6k",
        "revisitop1m",
        "ukbench",
        "holidays",
        "gldv2",
        "gldv2-train",
    ):
        assert re.search(rf"^{re.escape(name)}\s", listed, re.M), name
    with pytest.raises(SystemExit) as info:
        D.download_main(["roxford6k", "--root", "/tmp/x"])
    assert info.value.code == 2
    assert "unknown dataset 'roxford6k'; known:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        D.download_main(["roxford5k", "--root", "/tmp/x", "--parts", "1-3"])
    assert "--parts applies to sharded datasets only" in capsys.readouterr().err
    assert D.parse_parts("0-2, 7,9-10") == {0, 1, 2, 7, 9, 10}
    with pytest.raises(ValueError, match="range '5-1' is reversed"):
        D.parse_parts("5-1")
