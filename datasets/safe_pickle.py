"""Read pickles that datasets ship (3DPW's Python-2 sequence files, a converter's cameras.pkl) without running code.

`pickle.load` calls whatever a file names, so a file from elsewhere could run anything. This unpickler admits only
the globals that numpy arrays, numpy scalars and dtypes are rebuilt from, plus builtin containers (dict, list, tuple,
set, str, bytes, numbers); any other class named by the file is refused with the file and the class in the message.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

# (module, name) pairs a numpy array or scalar is rebuilt from, under numpy 1.x and 2.x names.
NUMPY_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}
BUILTIN_GLOBALS = {("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray",
                                                      "complex", "int", "float", "str", "bytes", "bool", "slice")}
# Protocol 2 written by Python 3 stores `bytes` (an array's data) as `_codecs.encode(text, "latin1")`: it only encodes.
BYTES_GLOBALS = {("_codecs", "encode")}
# Python 2 pickles name the builtins module `__builtin__` and may hold `copy_reg._reconstructor` for plain types.
PY2_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that is neither a numpy array part nor a builtin container."""


class ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = PY2_ALIASES.get(module, module)
        if (module, name) in NUMPY_GLOBALS | BUILTIN_GLOBALS | BYTES_GLOBALS:
            return super().find_class(module, name)
        raise RefusedGlobal(f"the pickle names {module}.{name}, which is neither a numpy array nor a builtin "
                            "container: refused (it would run code)")


def load_arrays_pickle(path: Path) -> Any:
    """The content of a pickle of numpy arrays and builtin containers. Python-2 pickles are read with
    `encoding="latin1"` (what numpy's arrays were pickled as); their `str`s come back as `str`."""
    with open(path, "rb") as handle:
        try:
            return ArraysOnlyUnpickler(handle, encoding="latin1").load()
        except RefusedGlobal as error:
            raise RefusedGlobal(f"{path}: {error}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
            raise ValueError(f"{path}: not a readable pickle of arrays ({type(error).__name__}: {error})") from None
