"""Reading a time window of a DSEC `events.h5` without reading the sequence: `ms_to_idx` lookup, then chunks.

DSEC stores events sorted by `t` (µs relative to `/t_offset`) and a table `ms_to_idx` whose entry m is the index of
the first event with `t >= 1000 m`. The first event at or after any time is found with two table reads and a search
inside one millisecond of events, so a window costs O(1) reads whatever the sequence length; the window's events are
then read in chunks of a fixed size, so memory stays bounded even for clips of hundreds of millions of events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter DSEC files are compressed with)
import numpy as np

COLUMNS = ("x", "y", "t", "p")
DTYPES = {"x": np.uint16, "y": np.uint16, "t": np.uint32, "p": np.uint8}
# How many events a search reads at once when the table does not narrow it to one millisecond.
SEARCH_CHUNK = 1 << 20


class EventsFileError(ValueError):
    """An events.h5 that cannot serve as DSEC input; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class EventWindow:
    """Events [start, stop) of `path`: those with clip_start_us <= t_offset + t < clip_end_us."""

    path: Path
    start: int
    stop: int
    t_offset: int

    @property
    def count(self) -> int:
        return self.stop - self.start


def open_events(path: Path) -> h5py.File:
    """Open and check the structure of a DSEC events file; raises `EventsFileError` saying what is wrong."""
    if not path.is_file():
        raise EventsFileError(f"{path}: events file not found (expected the DSEC layout events/left/events.h5)")
    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        raise EventsFileError(f"{path}: not a readable HDF5 file ({error}): re-download or re-extract it") from None
    try:
        missing = [f"/events/{name}" for name in COLUMNS if f"events/{name}" not in h5]
        missing += [f"/{name}" for name in ("ms_to_idx", "t_offset") if name not in h5]
        if missing:
            raise EventsFileError(f"{path}: missing {', '.join(missing)} (not a DSEC events file, or an incomplete one)")
        lengths = {h5[f"events/{name}"].shape[0] for name in COLUMNS}
        if len(lengths) != 1:
            raise EventsFileError(f"{path}: /events/{{x,y,t,p}} have different lengths {sorted(lengths)}")
    except BaseException:
        h5.close()
        raise
    return h5


def find_window(path: Path, start_us: int, end_us: int) -> EventWindow:
    """The events of `path` with absolute time in [start_us, end_us)."""
    with open_events(path) as h5:
        return window_in(h5, path, start_us, end_us)


def window_in(h5: h5py.File, path: Path, start_us: int, end_us: int) -> EventWindow:
    """`find_window` in an events file already open (one open for all the clips of a sequence)."""
    t_offset = int(h5["t_offset"][()])
    times, table = h5["events/t"], h5["ms_to_idx"]
    start = first_at_or_after(times, table, start_us - t_offset)
    stop = max(start, first_at_or_after(times, table, end_us - t_offset))
    return EventWindow(path, start, stop, t_offset)


def stream_span(h5: h5py.File) -> tuple[int, int]:
    """The absolute µs span [t_offset, t_offset + 1000 (len(ms_to_idx) - 1)] whose events the file guarantees: the
    one DSEC's EventSlicer serves (it refuses a window starting before `t_offset` or ending past the table)."""
    t_offset = int(h5["t_offset"][()])
    return t_offset, t_offset + 1000 * max(0, h5["ms_to_idx"].shape[0] - 1)


def first_at_or_after(times: h5py.Dataset | np.ndarray, table: h5py.Dataset | np.ndarray, time_us: int) -> int:
    """Index of the first event with t >= time_us (len(times) if none), reading about one millisecond of events."""
    count = times.shape[0]
    if time_us <= 0 or count == 0:
        return 0
    millisecond = time_us // 1000
    if millisecond >= table.shape[0]:
        low, high = int(table[-1]), count
    else:
        low = int(table[millisecond])
        high = int(table[millisecond + 1]) if millisecond + 1 < table.shape[0] else count
    low, high = min(low, count), min(max(low, high), count)
    for begin in range(low, high, SEARCH_CHUNK):
        block = times[begin : min(begin + SEARCH_CHUNK, high)]
        position = int(np.searchsorted(block, np.int64(time_us), side="left"))
        if position < len(block):
            return begin + position
    return high


def iter_chunks(window: EventWindow, columns: Sequence[str], chunk_events: int) -> Iterator[dict[str, np.ndarray]]:
    """The window's events, `chunk_events` at a time, as {column: array}; the file is open only while iterating."""
    with open_events(window.path) as h5:
        datasets = {name: h5[f"events/{name}"] for name in columns}
        for begin in range(window.start, window.stop, chunk_events):
            end = min(begin + chunk_events, window.stop)
            yield {name: dataset[begin:end] for name, dataset in datasets.items()}
