"""The restricted unpickler for pickles that datasets ship: numpy arrays and builtin containers come back, anything
else named by the file is refused before it runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from shardprep.datasets.safe_pickle import RefusedGlobal, load_arrays_pickle


class Runs:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_python2_style_pickle_of_arrays_and_containers(tmp_path: Path) -> None:
    """Protocol 2 with `fix_imports` names the builtins module `__builtin__`, as Python 2's pickles (3DPW's) do."""
    content = {"poses": [np.arange(6, dtype=np.float64).reshape(2, 3)], "valid": np.array([1, 0], dtype=np.uint8),
               "genders": ("m", "f"), "ids": {1, 2}, "scalar": np.float32(2.5), "name": "courtyard"}
    path = tmp_path / "seq.pkl"
    data = pickle.dumps(content, protocol=2, fix_imports=True)
    assert b"__builtin__" in data
    path.write_bytes(data)
    loaded = load_arrays_pickle(path)
    np.testing.assert_array_equal(loaded["poses"][0], content["poses"][0])
    assert loaded["valid"].dtype == np.uint8 and loaded["genders"] == ("m", "f") and loaded["ids"] == {1, 2}
    assert loaded["scalar"] == np.float32(2.5) and loaded["name"] == "courtyard"


def test_a_pickle_naming_any_other_global_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"poses": Runs()}, protocol=2))
    with pytest.raises(RefusedGlobal, match=r"evil.pkl: the pickle names (posix|os)\.system"):
        load_arrays_pickle(path)


def test_a_torn_pickle_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "torn.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(100)}, protocol=2)[:50])
    with pytest.raises(ValueError, match="torn.pkl: not a readable pickle"):
        load_arrays_pickle(path)
