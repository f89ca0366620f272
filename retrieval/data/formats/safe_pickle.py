"""Dataset pickles: written with plain containers, read with an unpickler that runs no code."""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.atomic import atomic_write

PICKLE_PROTOCOL = 4


def write_pickle(path: str | Path, obj: Any) -> None:
    """Pickle ``obj`` (plain containers, numbers, strings) atomically."""
    atomic_write(path, lambda h: pickle.dump(obj, h, protocol=PICKLE_PROTOCOL))


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy callables that array/dtype/scalar pickles reference, under 1.x and 2.x names."""
    core = getattr(np, "_core", None) or np.core
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


_SAFE_BUILTINS = (
    "list",
    "dict",
    "tuple",
    "set",
    "frozenset",
    "bytes",
    "bytearray",
    "complex",
    "slice",
)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import builtins
    import codecs
    import collections

    allowed = {("builtins", name): getattr(builtins, name) for name in _SAFE_BUILTINS}
    # Python 3 stores bytes in protocol-2 pickles (numpy buffers) as _codecs.encode(str, 'latin1')
    allowed[("_codecs", "encode")] = codecs.encode
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed.update(_numpy_globals())
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only plain containers and numpy arrays, dtypes and scalars."""

    def __init__(self, file: io.BufferedReader, path: Path) -> None:
        # latin1 decodes Python 2 ``str`` objects (and numpy buffers) of the published pickles
        super().__init__(file, encoding="latin1")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.set, ...) are mapped as the default find_class would
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self._path}: refusing to load global '{module}.{name}'; dataset pickles may "
                "only hold lists, dicts, strings, numbers and numpy arrays. Re-create the file "
                "with plain containers if you trust it."
            ) from None


def load_pickle(path: str | Path) -> Any:
    """Load a dataset pickle allowing only builtin containers/scalars and numpy data."""
    path = Path(path)
    with path.open("rb") as handle:
        try:
            return RestrictedUnpickler(handle, path).load()
        except pickle.UnpicklingError as err:
            if str(path) in str(err):
                raise
            raise pickle.UnpicklingError(f"{path}: not a valid pickle ({err})") from err
        except (EOFError, ValueError, TypeError, IndexError, KeyError) as err:
            raise pickle.UnpicklingError(f"{path}: not a valid pickle ({err})") from err
