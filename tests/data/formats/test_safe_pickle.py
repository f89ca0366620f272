"""Restricted unpickler: plain containers and numpy data load, code is refused and never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import formats as F


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.target}",))


def test_pickle_carrying_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "gnd_evil.pkl"
    path.write_bytes(pickle.dumps({"imlist": [], "gnd": [_Evil(marker)]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError) as info:
        F.load_pickle(path)
    assert f"{os.system.__module__}.system" in str(info.value)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # the same file given to a loader is refused before anything runs
    (tmp_path / "test/evil/jpg").mkdir(parents=True)
    os.replace(path, F.gnd_path(tmp_path, "evil"))
    with pytest.raises(pickle.UnpicklingError):
        F.load_revisitop(tmp_path, "evil")
    assert not marker.exists()


def test_pickle_with_builtin_eval_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "eval.pkl"
    path.write_bytes(b"cbuiltins\neval\n(V1+1\ntR.")
    assert pickle.loads(path.read_bytes()) == 2  # a plain unpickler would run it
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global 'builtins.eval'"):
        F.load_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_load(tmp_path: Path, protocol: int) -> None:
    obj = {
        "ok": np.arange(4, dtype=np.int64),
        "bbx": np.array([1.5, 2, 3, 4]),
        "n": np.int64(7),
        "dt": np.dtype("float32"),
        "s": {1, 2},
        "t": (1, "x"),
    }
    path = tmp_path / "np.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    loaded = F.load_pickle(path)
    np.testing.assert_array_equal(loaded["ok"], [0, 1, 2, 3])
    np.testing.assert_array_equal(loaded["bbx"], [1.5, 2, 3, 4])
    assert loaded["n"] == 7 and loaded["dt"] == np.float32
    assert loaded["s"] == {1, 2} and loaded["t"] == (1, "x")


def test_numpy1_module_paths_and_python2_strings(tmp_path: Path) -> None:
    # numpy 1.x pickles name numpy.core.multiarray; protocol 2 writes globals as text lines
    data = pickle.dumps({"junk": np.array([3, 1])}, protocol=2)
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"cnumpy.core.multiarray\n_reconstruct" in data
    path = tmp_path / "np1.pkl"
    path.write_bytes(data)
    np.testing.assert_array_equal(F.load_pickle(path)["junk"], [3, 1])
    # Python 2 str objects (SHORT_BINSTRING, opcode 'U') hold raw bytes: decoded as latin1
    py2 = b"\x80\x02}q\x00U\x06imlistq\x01]q\x02U\x04caf\xe9q\x03as."
    path.write_bytes(py2)
    assert F.load_pickle(path) == {"imlist": ["caf\u00e9"]}


def test_truncated_pickle_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": list(range(100))}, protocol=4)[:20])
    with pytest.raises(pickle.UnpicklingError, match="cut.pkl"):
        F.load_pickle(path)
