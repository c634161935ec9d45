"""A tool's per-item output: a folder of files whose names (and array shapes) the stage config declares.

Research tools write folders (`--out_dir`), so the checkpoint of an external stage is a folder `<item>.<output>`.
A tool that exits 0 can still have written nothing, half a file or the wrong shape; checking every declared file —
`.npy` sizes against their headers, `.npz` archives, `.json` syntax — turns that into the item's error instead of a
broken training file later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import npz_headers, read_npz
from shardprep.stages.base import FileOutput

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class FolderOutput:
    """`files` maps a relative file name to what it must hold: a shape for `.npy` (None = any size), a mapping of
    key -> shape for `.npz`, or None (present and non-empty; `.json` must parse)."""

    name: str
    files: Mapping[str, Any]

    @classmethod
    def from_config(cls, name: str, files: Mapping[str, Any] | None) -> FolderOutput:
        if not files:
            raise ConfigError(f"stage.outputs.{name}: list the files the tool writes, e.g. {{depth.npy: [null, null]}}")
        parsed: dict[str, Any] = {}
        for file, spec in files.items():
            if file.endswith(".npz") and spec is not None:
                parsed[file] = {key: _shape(shape) for key, shape in dict(spec).items()}
            else:
                parsed[file] = _shape(spec) if spec is not None else None
        return cls(name, parsed)

    def file_output(self) -> FileOutput:
        return FileOutput(self.name, suffix=self.name, validate=self.validate)

    def validate(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder")
        for file, spec in self.files.items():
            validate_file(folder / file, spec)

    def read_arrays(self, folder: Path) -> dict[str, np.ndarray]:
        """The declared arrays of a folder: `x.npy` as `x`, each key `k` of `y.npz` as `y/k` (never with pickle)."""
        arrays: dict[str, np.ndarray] = {}
        for file in self.files:
            stem = file[: -len(".npy")] if file.endswith(".npy") else file[: -len(".npz")]
            if file.endswith(".npy"):
                arrays[stem] = np.load(folder / file, allow_pickle=False)
            elif file.endswith(".npz"):
                arrays.update({f"{stem}/{key}": value for key, value in read_npz(folder / file).items()})
        return arrays


def validate_file(path: Path, spec: Any) -> None:
    if not path.is_file():
        raise ValueError(f"{path.name} missing")
    if path.suffix == ".npy":
        shape = _npy_check(path)
        if spec is not None and not _matches(shape, spec):
            raise ValueError(f"{path.name} has shape {shape}, expected {_show(spec)}")
    elif path.suffix == ".npz":
        headers = npz_headers(path)
        for key, shape in (spec or {}).items():
            if key not in headers:
                raise ValueError(f"{path.name} has no array {key!r}")
            if not _matches(headers[key][0], shape):
                raise ValueError(f"{path.name}:{key} has shape {headers[key][0]}, expected {_show(shape)}")
    elif path.stat().st_size == 0:
        raise ValueError(f"{path.name} is empty")
    elif path.suffix == ".json":
        json.loads(path.read_text())


def _npy_check(path: Path) -> tuple[int, ...]:
    """Shape from the header; raises if the file is shorter or longer than the header says (a truncated write)."""
    try:
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
    except (ValueError, EOFError) as error:
        raise ValueError(f"{path.name} has no readable .npy header ({error}): truncated or not an array") from None
    if dtype.hasobject:
        raise ValueError(f"{path.name} holds Python objects (needs pickle): write plain numeric arrays")
    expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = os.path.getsize(path)
    if actual != expected:
        raise ValueError(f"{path.name} is {actual} bytes, its header says {expected} (truncated or corrupt)")
    return tuple(shape)


def _shape(spec: Any) -> Shape:
    return tuple(None if dim is None else int(dim) for dim in spec)


def _matches(actual: tuple[int, ...], expected: Shape) -> bool:
    return len(actual) == len(expected) and all(e is None or a == e for a, e in zip(actual, expected))


def _show(shape: Shape) -> str:
    return "(" + ", ".join("*" if dim is None else str(dim) for dim in shape) + ")"
