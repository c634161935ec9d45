"""NPZ files that are byte-for-byte reproducible and can be validated without reading their data.

`numpy.savez` stamps each member with the current time, so two runs that compute the same arrays write different
bytes. Here every member gets a fixed timestamp and the keys are written in sorted order, which makes merged
training files identical whatever the shard count or the history of interruptions.
"""

from __future__ import annotations

import functools
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardprep.runtime.atomic import atomic_path

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_MAGIC = b"\x93NUMPY"
_HEADER_PEEK = 512
_SHAPE = re.compile(rb"'shape':\s*\(([^)]*)\)")


@dataclass(frozen=True)
class StreamedArray:
    """An array too large to hold in memory (a clip of 100M+ events): known shape and dtype, data as C-order chunks.

    `write_npz` writes its header from `shape`/`dtype`, then the chunks one at a time, so memory stays at one chunk.
    `chunks` is called once per write and must yield exactly `prod(shape)` elements in total.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: Callable[[], Iterable[np.ndarray]]


def write_npz(path: Path, arrays: Mapping[str, np.ndarray | StreamedArray], compress: bool = False) -> None:
    """Atomically write `arrays` as an NPZ at `path`."""
    with atomic_path(path) as tmp:
        save_npz(tmp, arrays, compress)


def write_npz_at_once(path: Path, arrays: Mapping[str, np.ndarray | StreamedArray]) -> None:
    """Atomically write a small NPZ (a per-item checkpoint) assembled in memory by `npz_bytes`, in one write call;
    one with streamed arrays (a clip's events) is written member by member instead, never held whole."""
    if any(isinstance(value, StreamedArray) for value in arrays.values()):
        write_npz(path, arrays)
        return
    data = npz_bytes(arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray | StreamedArray], compress: bool = False) -> None:
    """Write `arrays` as an NPZ at `path` (not atomic). Object arrays are refused: they would need pickle to read."""
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=mode, allowZip64=True) as archive:
        for key in sorted(arrays):
            if isinstance(arrays[key], StreamedArray):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_TIME)
                info.compress_type = mode
                with archive.open(info, "w", force_zip64=True) as member:
                    _write_streamed(member, key, arrays[key])
                continue
            array = _storable(key, arrays[key])
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_TIME)
            info.compress_type = mode
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A small NPZ (members stored, not compressed) built in memory, what the per-item checkpoints are.

    The same archive as `save_npz` writes, less zip64 fields, assembled directly: through `zipfile` and
    `numpy.lib.format` the thread that writes checkpoints holds Python's global lock several times longer, and the
    threads feeding the GPU wait for it (figures in docs/depth.md). The .npy headers are numpy's
    own (cached per dtype and shape); members hold C-order data; sizes stay far below zip's 4 GiB limit (refused).
    """
    local, central, offset = [], [], 0
    for key in sorted(arrays):
        array = _storable(key, arrays[key])
        array = array if array.flags.c_contiguous else array.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        data = _npy_header(array.dtype.str, array.shape) + array.tobytes()
        name = f"{key}.npy".encode()
        if len(data) >= 0xFFFFFFFF:
            raise ValueError(f"array {key!r} is too large for a checkpoint member ({len(data)} bytes)")
        fields = (_ZIP_VERSION, 0, zipfile.ZIP_STORED, _DOS_TIME, _DOS_DATE, zlib.crc32(data), len(data), len(data),
                  len(name))
        local += [struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields, 0), name, data]
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", _ZIP_VERSION, *fields, 0, 0, 0, 0, 0, offset) + name)
        offset += 30 + len(name) + len(data)
    directory = b"".join(central)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), len(directory), offset, 0)
    return b"".join(local) + directory + end


_ZIP_VERSION = 20  # "2.0": what zipfile writes for stored members without zip64
_DOS_TIME = (_FIXED_TIME[3] << 11) | (_FIXED_TIME[4] << 5) | (_FIXED_TIME[5] // 2)
_DOS_DATE = ((_FIXED_TIME[0] - 1980) << 9) | (_FIXED_TIME[1] << 5) | _FIXED_TIME[2]


@functools.lru_cache(maxsize=256)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _storable(key: str, value: np.ndarray) -> np.ndarray:
    array = np.asanyarray(value)
    if array.dtype.hasobject:
        raise TypeError(f"array {key!r} has dtype object; store plain numeric or string arrays")
    return array


def _write_streamed(member, key: str, array: StreamedArray) -> None:
    dtype = np.dtype(array.dtype)
    if dtype.hasobject:
        raise TypeError(f"array {key!r} has dtype object; store plain numeric or string arrays")
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(array.shape)}
    np.lib.format.write_array_header_2_0(member, header)
    expected, written = int(np.prod(array.shape)), 0
    for chunk in array.chunks():
        chunk = np.ascontiguousarray(chunk, dtype=dtype)
        written += chunk.size
        if written > expected:
            break
        member.write(chunk.data)
    if written != expected:
        raise ValueError(f"streamed array {key!r}: chunks gave {written} elements, its shape {array.shape} needs {expected}")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an NPZ written by us (never with pickle)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each member, read from the .npy headers only. Raises if the archive is unreadable."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            with archive.open(name) as member:
                major, _ = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
            headers[name[: -len(".npy")]] = (shape, dtype)
    return headers


def member_shapes(archive: zipfile.ZipFile, keys: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of the named members, read from their .npy headers only (no data). KeyError if a member is missing.

    The header is parsed with a regular expression instead of numpy's `literal_eval`: that is most of the cost of
    validating a checkpoint, and resume validates every checkpoint of a shard.
    """
    shapes = {}
    for key in keys:
        with archive.open(f"{key}.npy") as member:
            header = member.read(_HEADER_PEEK)
        match = _SHAPE.search(header)
        if not header.startswith(_MAGIC) or match is None:
            raise ValueError(f"member {key!r} is not a .npy array")
        shapes[key] = tuple(int(n) for n in match.group(1).split(b",") if n.strip())
    return shapes


def array_bytes(array: np.ndarray) -> bytes:
    """The exact bytes `save_npz` stores for `array`, to compare a member without parsing it."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()
