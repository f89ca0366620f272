"""The dataset registry writes where the format loaders read, from the official sources."""

from __future__ import annotations

import re
from pathlib import Path

from retrieval.data import download as D
from retrieval.data import formats as F


def test_registry_matches_loader_layout() -> None:
    def dests(name: str) -> set[str]:
        return {r.dest for r in D.REGISTRY[name].resources}

    root = Path("/r")
    for name in ("roxford5k", "rparis6k", "oxford5k", "paris6k"):
        assert F.gnd_path(root, name).relative_to(root).as_posix() in dests(name)
        assert D.REGISTRY[name].resources[-1].url == (
            f"http://cmp.felk.cvut.cz/cnnimageretrieval/data/test/{name}/gnd_{name}.pkl"
        )
    sfm = "retrieval-SfM-120k"
    assert {
        F.sfm_db_path(root, sfm).relative_to(root).as_posix(),
        F.sfm_whiten_path(root, sfm).relative_to(root).as_posix(),
        F.sfm_ims_dir(root, sfm).relative_to(root).as_posix(),
    } <= dests("retrieval-sfm-120k")
    r1m = D.REGISTRY["revisitop1m"].resources
    assert len([r for r in r1m if r.part is not None]) == 100
    assert (
        r1m[-1].url == "http://ptak.felk.cvut.cz/revisitop/revisitop1m/jpg/revisitop1m.100.tar.gz"
    )
    assert len(D.REGISTRY["gldv2-train"].resources) == 502
    for spec in D.REGISTRY.values():
        for resource in spec.resources:
            assert re.match(r"(https?|ftp)://", resource.url) and not resource.dest.startswith("/")
