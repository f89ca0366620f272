"""Start-up refusal of unknown keys under the config groups whose keys are fixed.

Hydra answers a typo (`data.nnumm=3`) with the advice `+data.nnumm=3`, which adds a key that
nothing reads: the run would go on silently with the default. The keys a node may hold are those
the options of its group define in conf/ (their union: `+data.chunk_size=4` is legitimate with
data=synthetic because another data option sets it).
"""

from __future__ import annotations

import dataclasses
import difflib
from functools import cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from retrieval.data.augment import Augmentation
from retrieval.data.synthetic import SyntheticConfig
from retrieval.pipelines.config import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# config node -> the conf/ group whose options define its keys. Not here, on purpose: loss
# (pytorch-metric-learning losses take constructor arguments as +loss.KEY=VALUE), trainer
# (Lightning's own arguments, which the Trainer checks), logger (a list), pooling.args (each
# pooling checks its arguments).
GROUP_NODES = {
    "backbone": "backbone",
    "pooling": "pooling",
    "optimizer": "optimizer",
    "data": "data",
    "paths": "paths",
    "synthetic": "synthetic",
    "data.synthetic": "synthetic",
}
# Groups built into a dataclass: its fields are valid keys even where no option sets them
# (`+data.synthetic.workers=4`).
_DATACLASSES: dict[str, type] = {"synthetic": SyntheticConfig}
# Nodes inside a group's option that a dataclass reads: their keys are its fields.
_DATACLASS_NODES: dict[str, type] = {"data.augment": Augmentation}
# The job's own mapping nodes fix their keys in its yaml (train.yaml's extract...), but these.
_OPEN_JOB_NODES = ("hydra",)


@cache
def _group_keys(conf_dir: Path, group: str) -> frozenset[str]:
    """Every key any option of `group` defines (defaults lists give their package's key)."""
    keys: set[str] = set()
    for option in (conf_dir / group).glob("*.yaml"):
        node = OmegaConf.load(option)
        keys |= {str(k) for k in node if k != "defaults"}
        for entry in node.get("defaults") or []:  # e.g. `/synthetic@synthetic: default`
            for name in entry.keys() if isinstance(entry, DictConfig) else []:
                if "@" in str(name):
                    keys.add(str(name).rpartition("@")[2].rpartition(".")[2])
    if group in _DATACLASSES:
        keys |= {field.name for field in dataclasses.fields(_DATACLASSES[group])}
    return frozenset(keys)


@cache
def _job_nodes(conf_dir: Path, job: str) -> dict[str, frozenset[str]]:
    """The mapping nodes of conf/JOB.yaml itself and the keys each holds."""
    node = OmegaConf.load(conf_dir / f"{job}.yaml")
    return {
        str(name): frozenset(str(k) for k in value)
        for name, value in node.items_ex(resolve=False)
        if isinstance(value, DictConfig) and name not in _OPEN_JOB_NODES
    }


def _node(cfg: DictConfig, path: str) -> DictConfig | None:
    """The mapping node at a dotted path, or None (absent, null or not a mapping)."""
    node = OmegaConf.select(cfg, path, default=None, throw_on_missing=False)
    return node if isinstance(node, DictConfig) else None


def _refuse_unknown(node: DictConfig, path: str, valid: frozenset[str]) -> None:
    for key in node:
        if str(key) in valid:
            continue
        closest = difflib.get_close_matches(str(key), sorted(valid), n=1)
        hint = f"did you mean `{path}.{closest[0]}`? " if closest else ""
        raise ConfigError(
            f"Unknown config key `{path}.{key}`: nothing reads it (Hydra's `+` adds any key). "
            f"{hint}Valid keys of {path}: {', '.join(sorted(valid))}."
        )


def check_known_keys(cfg: DictConfig, job: str, conf_dir: Path = CONF_DIR) -> None:
    """Refuse a key under a fixed group or job node that no option defines (`+data.nnumm=3`),
    naming the closest valid key. `job`: train or evaluate (conf/JOB.yaml)."""
    if not (conf_dir / f"{job}.yaml").is_file():  # the package used without its conf/ folder
        return
    for path, group in GROUP_NODES.items():
        node = _node(cfg, path)
        if node is not None:
            _refuse_unknown(node, path, _group_keys(conf_dir, group))
    for path, kind in _DATACLASS_NODES.items():
        node = _node(cfg, path)
        if node is not None:
            _refuse_unknown(node, path, frozenset(f.name for f in dataclasses.fields(kind)))
    for path, keys in _job_nodes(conf_dir, job).items():
        node = _node(cfg, path)
        if node is not None:
            _refuse_unknown(node, path, keys)
