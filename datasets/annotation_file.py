"""Read an annotation NPZ that a user pointed at, refusing what would crash or mislead later, before anything runs.

What reaches the cluster must not be: an empty or truncated file (numpy gives EOFError/BadZipFile), a file that is
not a zip at all, an archive whose members declare more data than they hold, or a small archive that inflates to
gigabytes (a zip bomb: the sizes are read from the zip directory and the `.npy` headers, before any data is read).
`imgname` stored as bytes (older converters) is decoded as UTF-8. Each problem is one `ConfigError` naming the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from shardprep.runtime.errors import ConfigError

# An annotation member may inflate to this many times its stored size, above a size where ratios stop mattering.
# Real annotation files are stored (np.savez) or deflate float poses and padded names by far less than this.
MAX_INFLATION = 100
SMALL_MEMBER = 64 << 20


def member_sizes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """Per member: shape and dtype from its `.npy` header, and the bytes its data takes; checked against the zip."""
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: the file is empty (0 bytes): re-run the converter or copy it again")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{path}: not an NPZ (zip) file, or truncated (no zip directory at its end): "
                          "re-run the converter or copy it again")
    sizes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                if info.file_size > SMALL_MEMBER and info.file_size > MAX_INFLATION * max(1, info.compress_size):
                    raise ConfigError(
                        f"{path}: member {key!r} inflates from {info.compress_size} to {info.file_size} bytes "
                        f"(over {MAX_INFLATION}x): refused as a zip bomb; an annotation file is never packed that tight")
                with archive.open(info) as member:
                    major, _ = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if major == 1
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member)
                    header_bytes = member.tell()
                if dtype.hasobject:
                    raise ConfigError(f"{path}: member {key!r} holds Python objects (pickle): store plain arrays")
                data_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if header_bytes + data_bytes > info.file_size:
                    raise ConfigError(f"{path}: member {key!r} declares shape {shape} ({data_bytes} bytes) but holds "
                                      f"{info.file_size} bytes: the file is damaged; re-run the converter")
                sizes[key] = (tuple(shape), dtype, data_bytes)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        raise ConfigError(f"{path}: unreadable NPZ ({error}): re-run the converter or copy it again") from None
    return sizes


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the annotation file, after `member_sizes` passed; `imgname` as text."""
    member_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        raise ConfigError(f"{path}: unreadable NPZ ({error}): re-run the converter or copy it again") from None
    names = arrays.get("imgname")
    if names is not None and names.dtype.kind == "S":
        try:
            arrays["imgname"] = np.char.decode(names, "utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: imgname holds bytes that are not UTF-8 ({error})") from None
    elif names is not None and names.dtype.kind != "U":
        raise ConfigError(f"{path}: imgname has dtype {names.dtype}, expected text (file names)")
    return arrays
