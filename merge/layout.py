"""Read many NPZ files that share one byte layout without parsing each one: the merge's fast path.

`write_npz` stores members uncompressed, sorted, with fixed timestamps, so two checkpoints of one run with the same
keys, shapes and dtypes are the same bytes except for the array payloads and the CRC-32 fields. `np.load` parses the
zip directory and every `.npy` header of every file (about 2 ms for a depth checkpoint, most of a merge's time); here
the first file is parsed once, and every other file is read in one call, compared byte for byte with it outside
those regions, its members' CRC-32 checked, and its arrays taken from their known offsets. A file that differs in
any other byte (other shapes, compression, a foreign writer) gets `None`, and the caller reads it with `np.load`.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_LOCAL_HEADER = 30  # fixed part of a zip local file header
_CENTRAL_HEADER = 46  # fixed part of a central directory record
_LOCAL_CRC, _CENTRAL_CRC = 14, 16  # offsets of the CRC-32 field in those records


@dataclass(frozen=True)
class Member:
    crc_at: int  # offset of the member's CRC-32 in its local header
    start: int  # the member's stored bytes (the whole .npy file)
    end: int
    data: int  # offset of the array payload
    dtype: np.dtype
    shape: tuple[int, ...]
    count: int  # elements


@dataclass(frozen=True)
class Layout:
    size: int
    fixed: np.ndarray  # bool per byte: must equal the template
    template: np.ndarray  # uint8, the template's bytes where `fixed`
    members: dict[str, Member]

    @classmethod
    def of(cls, path: str | Path, keys: Sequence[str]) -> Layout | None:
        """The layout of `path` for reading `keys`; None where it cannot serve as a template."""
        with open(path, "rb") as handle:
            raw = handle.read()
        fixed = np.ones(len(raw), dtype=bool)
        members = {}
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED:
                    return None
                name_length, extra_length = struct.unpack_from("<HH", raw, info.header_offset + 26)
                start = info.header_offset + _LOCAL_HEADER + name_length + extra_length
                with archive.open(info) as member:
                    major, _ = np.lib.format.read_magic(member)
                    read_header = (
                        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    )
                    shape, fortran, dtype = read_header(member)
                    data = start + member.tell()
                if fortran or dtype.hasobject:
                    return None
                end = start + info.file_size
                count = int(np.prod(shape))
                if data + count * dtype.itemsize != end:
                    return None
                fixed[data:end] = False
                fixed[info.header_offset + _LOCAL_CRC:info.header_offset + _LOCAL_CRC + 4] = False
                members[info.filename.removesuffix(".npy")] = Member(
                    info.header_offset + _LOCAL_CRC, start, end, data, dtype, tuple(shape), count)
            record = archive.start_dir
        for _ in infos:  # central directory: one record per member, its CRC-32 varies too
            name_length, extra_length, comment_length = struct.unpack_from("<HHH", raw, record + 28)
            fixed[record + _CENTRAL_CRC:record + _CENTRAL_CRC + 4] = False
            record += _CENTRAL_HEADER + name_length + extra_length + comment_length
        if any(key not in members for key in keys):
            return None
        template = np.frombuffer(raw, dtype=np.uint8)[fixed].copy()
        return cls(len(raw), fixed, template, {key: members[key] for key in keys})

    def read(self, path: str | Path) -> dict[str, np.ndarray] | None:
        """The arrays of `path` if it has this layout and intact members, else None. Raises OSError if unreadable."""
        with open(path, "rb") as handle:
            raw = handle.read()
        if len(raw) != self.size or not np.array_equal(np.frombuffer(raw, dtype=np.uint8)[self.fixed], self.template):
            return None
        arrays = {}
        for key, member in self.members.items():
            (crc,) = struct.unpack_from("<I", raw, member.crc_at)
            if zlib.crc32(raw[member.start:member.end]) != crc:
                return None
            arrays[key] = np.frombuffer(raw, member.dtype, member.count, member.data).reshape(member.shape)
        return arrays
