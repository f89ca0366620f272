"""train.py's data sources: real data without a data root is refused by name, with an example."""

from __future__ import annotations

import pytest

import retrieval.data.synthetic as synthetic
from retrieval.pipelines.config import ConfigError
from retrieval.pipelines.sources import build_sources


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=cirtorch_r101_gem"],  # the first command a cirtorch user types
        ["data=sfm120k"],
        ["data=sfm30k"],
        ["data=labels"],
        ["data=class_folders"],
        ["data=gldv2"],
    ],
)
def test_real_data_without_data_root_names_data_root_and_an_example(
    overrides, compose_train, monkeypatch
):
    def generated(*args, **kwargs):
        raise AssertionError("real data without a root fell back to the synthetic world")

    monkeypatch.setattr(synthetic, "ensure_world", generated)
    cfg = compose_train(*overrides)
    with pytest.raises(ConfigError) as err:
        build_sources(cfg)
    message = str(err.value)
    assert message.startswith("data.root is not set")
    assert "data.root=/data" in message and "paths.data_root=/data" in message
    assert "OmegaConf" not in message  # not the old "Input cfg is not an OmegaConf config"
