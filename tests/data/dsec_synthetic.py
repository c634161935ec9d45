"""Synthetic DSEC sequences in the real on-disk layout, for tests and the benchmark.

Per sequence: `events/left/events.h5` (Blosc-compressed `/events/{p,x,y,t}`, `/ms_to_idx`, `/t_offset` != 0),
`images/left/rectified/%06d.png` and `images/timestamps.txt` (absolute µs, one per frame). Events are written in
blocks of one second, so a sequence of hundreds of millions of events is made with bounded memory.

`ms_to_idx[m]` is the index of the first event with `t >= 1000 m` (DSEC's property), built from per-millisecond
counts. Some events sit exactly on millisecond boundaries and `gaps_ms` leaves stretches with no events at all, so
clip boundaries and empty windows are exercised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
from PIL import Image

WIDTH, HEIGHT = 640, 480
BLOCK_MS = 1000


@dataclass(frozen=True)
class SyntheticSequence:
    folder: Path
    t_offset: int
    frame_timestamps: np.ndarray  # absolute µs
    events: int


def make_sequence(
    folder: Path,
    *,
    t_offset: int = 1_700_000_123_456,
    duration_ms: int = 2300,
    events_per_ms: int = 40,
    gaps_ms: Sequence[tuple[int, int]] = ((900, 1600),),
    first_frame_us: int = 20_000,
    frames: int = 45,
    frame_period_us: int = 50_000,
    frame_size: tuple[int, int] = (32, 24),
    seed: int = 0,
) -> SyntheticSequence:
    """Write one sequence under `folder`; frames start `first_frame_us` after `t_offset`."""
    rng = np.random.default_rng(seed)
    events_file = folder / "events" / "left" / "events.h5"
    events_file.parent.mkdir(parents=True, exist_ok=True)
    counts_all = []
    with h5py.File(events_file, "w") as h5:
        group = h5.create_group("events")
        compression = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)
        columns = {
            name: group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 16,),
                                       **compression)
            for name, dtype in (("x", np.uint16), ("y", np.uint16), ("t", np.uint32), ("p", np.uint8))
        }
        written = 0
        for block in range(0, duration_ms, BLOCK_MS):
            ms = np.arange(block, min(block + BLOCK_MS, duration_ms))
            counts = rng.poisson(events_per_ms, size=ms.size)
            for start, end in gaps_ms:
                counts[(ms >= start) & (ms < end)] = 0
            counts_all.append(counts)
            n = int(counts.sum())
            offsets = rng.integers(0, 1000, size=n)
            offsets[::7] = 0  # events exactly on a millisecond
            t = np.sort(np.repeat(ms * 1000, counts) + offsets).astype(np.uint32)
            block_columns = {
                "x": rng.integers(0, WIDTH, size=n, dtype=np.uint16),
                "y": rng.integers(0, HEIGHT, size=n, dtype=np.uint16),
                "t": t,
                "p": rng.integers(0, 2, size=n, dtype=np.uint8),
            }
            for name, values in block_columns.items():
                columns[name].resize((written + n,))
                columns[name][written:] = values
            written += n
        ms_to_idx = np.concatenate([[0], np.cumsum(np.concatenate(counts_all))]).astype(np.uint64)
        h5.create_dataset("ms_to_idx", data=ms_to_idx, **compression)
        h5.create_dataset("t_offset", data=np.int64(t_offset))

    timestamps = t_offset + first_frame_us + frame_period_us * np.arange(frames, dtype=np.int64)
    frames_dir = folder / "images" / "left" / "rectified"
    frames_dir.mkdir(parents=True, exist_ok=True)
    width, height = frame_size
    for index in range(frames):
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[..., 0] = (index * 5) % 256
        image[:, : (index % width) + 1, 1] = 200
        image[..., 2] = np.arange(width, dtype=np.uint8)[None, :] * 4
        Image.fromarray(image).save(frames_dir / f"{index:06d}.png")
    (folder / "images" / "timestamps.txt").write_text("".join(f"{ts}\n" for ts in timestamps))
    return SyntheticSequence(folder, t_offset, timestamps, written)


def make_dataset(root: Path) -> dict[str, SyntheticSequence]:
    """The tests' dataset: two train sequences (clip starts on and off the millisecond grid) and one test sequence."""
    return {
        "train/zurich_city_00_a": make_sequence(root / "train" / "zurich_city_00_a", seed=1),
        "train/zurich_city_01_b": make_sequence(root / "train" / "zurich_city_01_b", seed=2, first_frame_us=20_377,
                                                t_offset=1_700_000_000_001, gaps_ms=()),
        "test/interlaken_00_a": make_sequence(root / "test" / "interlaken_00_a", seed=3, frames=25),
    }


def read_all_events(events_file: Path) -> dict[str, np.ndarray]:
    """The whole sequence in memory: the brute-force reference the tests compare against (small files only)."""
    with h5py.File(events_file, "r") as h5:
        return {name: h5["events"][name][:] for name in ("x", "y", "t", "p")} | {
            "t_offset": np.int64(h5["t_offset"][()])
        }
