"""The HDF5 training file: the same arrays as the XYCD NPZ, chunked and compressed, with the run's provenance.

For datasets whose arrays make an NPZ impractical (features, many frames): readers load slices without reading the
file. Bytes are reproducible: no object timestamps (`track_times=False`), chunk shapes fixed by the array shape,
gzip (deterministic), datasets and attributes created in sorted order, and the oldest file format (`libver`
earliest), whose headers carry no dates. Text arrays are stored as fixed-length UTF-8 (read back with `.asstr()`);
nested attributes as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from shardprep.runtime.atomic import atomic_path

CHUNK_BYTES = 1 << 20  # about 1 MiB per chunk


def write(path: Path, arrays: Mapping[str, np.ndarray], attributes: Mapping[str, object]) -> Path:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="earliest") as handle:
            for key in sorted(arrays):
                _dataset(handle, key, np.asarray(arrays[key]))
            for key in sorted(attributes):
                value = attributes[key]
                handle.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
    return path


def _dataset(handle: h5py.File, key: str, array: np.ndarray) -> None:
    if array.dtype.kind == "U":
        encoded = np.char.encode(array, "utf-8")
        array = encoded.astype(h5py.string_dtype("utf-8", max(1, encoded.dtype.itemsize)))
    if array.ndim == 0 or array.size == 0:
        handle.create_dataset(key, data=array, track_times=False)
        return
    row_bytes = max(1, array[0].nbytes)
    chunks = (max(1, min(len(array), CHUNK_BYTES // row_bytes)), *array.shape[1:])
    handle.create_dataset(key, data=array, chunks=chunks, compression="gzip", compression_opts=4,
                          shuffle=True, track_times=False)
