"""DSEC clips without the runtime: enumeration, ms_to_idx windows against a brute-force slice, rendering."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from data.dsec_synthetic import make_dataset, make_sequence, read_all_events

from shardprep.datasets.dsec import DSECDataset
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import StreamedArray, read_npz, write_npz
from shardprep.stages.events.render import BLUE, EVENTS_PER_THREAD, RED, WHITE, EventCanvas, render_loop
from shardprep.stages.events.slicing import EventsFileError, find_window, first_at_or_after, iter_chunks
from shardprep.stages.events.stage import EventsStage

DURATIONS = [500, 1000, 2000]


@pytest.fixture(scope="module")
def dsec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dsec")
    make_dataset(root)
    return root


def dataset(root: Path, **overrides) -> DSECDataset:
    settings = {"splits": {"train": "train", "test": "test"}, "durations_ms": DURATIONS, "overlap": 0.5} | overrides
    return DSECDataset("dsec", str(root), **settings)


def test_clips_are_enumerated_deterministically_with_overlap(dsec_root: Path) -> None:
    data = dataset(dsec_root)
    data.validate()
    items = data.items()
    assert [item.id for item in items] == [item.id for item in dataset(dsec_root).items()]
    assert len({item.id for item in items}) == len(items)
    assert items[0].id == "test.500ms.interlaken_00_a.00000"
    assert [item.index for item in items] == list(range(len(items)))
    groups = {}
    for item in items:
        groups[item.group] = groups.get(item.group, 0) + 1
    # 2.2 s train sequences: (2200 - D) / (D / 2) + 1 clips; the 1.2 s test sequence has no 2 s clip.
    assert groups == {"test/500ms": 3, "test/1s": 1, "train/500ms": 14, "train/1s": 6, "train/2s": 2}
    clips = [data.clip(item) for item in items if item.group == "train/500ms"][:3]
    assert [c.start_us - clips[0].start_us for c in clips] == [0, 250_000, 500_000]
    assert all(c.end_us - c.start_us == 500_000 for c in clips)
    assert len(clips[0].frames) == 10 and clips[0].frame_timestamps[0] == clips[0].start_us
    no_overlap = [i for i in dataset(dsec_root, overlap=0.0).items() if i.group == "train/500ms"]
    assert len(no_overlap) == 8


def test_every_clip_window_equals_a_brute_force_slice(dsec_root: Path) -> None:
    data = dataset(dsec_root)
    full = {}
    empty = 0
    for item in data.items():
        clip = data.clip(item)
        if clip.events_file not in full:
            full[clip.events_file] = read_all_events(clip.events_file)
        events = full[clip.events_file]
        absolute = events["t_offset"] + events["t"].astype(np.int64)
        expected = np.flatnonzero((absolute >= clip.start_us) & (absolute < clip.end_us))
        window = find_window(clip.events_file, clip.start_us, clip.end_us)
        if expected.size:
            assert (window.start, window.stop) == (expected[0], expected[-1] + 1), item.id
        else:
            assert window.count == 0, item.id
            empty += 1
        chunks = list(iter_chunks(window, ("t", "x"), chunk_events=997))
        got = np.concatenate([c["t"] for c in chunks]) if chunks else np.empty(0, np.uint32)
        assert np.array_equal(got, events["t"][expected])
    assert empty >= 1  # the synthetic gap gives at least one clip with no events


@pytest.mark.parametrize("time_us", [-5, 0, 1, 999, 1000, 1001, 899_999, 900_000, 1_234_000, 1_600_000, 2_299_895,
                                     2_299_896, 2_300_000, 10**12])
def test_first_event_at_or_after_any_time(dsec_root: Path, time_us: int) -> None:
    path = dsec_root / "train" / "zurich_city_00_a" / "events" / "left" / "events.h5"
    t = read_all_events(path)["t"]
    with h5py.File(path) as h5:
        assert first_at_or_after(h5["events/t"], h5["ms_to_idx"], time_us) == np.searchsorted(t, time_us)


def test_short_ms_to_idx_table_still_finds_the_window(tmp_path: Path) -> None:
    """Past the table's end the search falls back to reading chunk by chunk from its last entry."""
    t = np.sort(np.random.default_rng(0).integers(0, 50_000, 5000)).astype(np.uint32)
    table = np.searchsorted(t, 1000 * np.arange(10)).astype(np.uint64)  # covers only the first 10 ms
    for time_us in (0, 9_500, 10_000, 33_333, 49_999, 60_000):
        assert first_at_or_after(t, table, time_us) == np.searchsorted(t, time_us)


def test_bad_events_files_fail_with_the_path(tmp_path: Path) -> None:
    sequence = make_sequence(tmp_path / "seq", duration_ms=50, frames=2)
    path = sequence.folder / "events" / "left" / "events.h5"
    with h5py.File(path, "a") as h5:
        del h5["ms_to_idx"]
    with pytest.raises(EventsFileError, match=r"events\.h5: missing /ms_to_idx"):
        find_window(path, 0, 1)
    path.write_bytes(b"not hdf5" * 100)
    with pytest.raises(EventsFileError, match=r"events\.h5: not a readable HDF5 file"):
        find_window(path, 0, 1)
    with pytest.raises(EventsFileError, match=r"missing\.h5: events file not found"):
        find_window(tmp_path / "missing.h5", 0, 1)


@pytest.mark.parametrize("overrides, message", [
    ({"overlap": 1.0}, "overlap=1.0"),
    ({"durations_ms": [0]}, "durations_ms: 0"),
    ({"durations_ms": [500, 500]}, "twice"),
    ({"splits": {"val": "val"}}, "folder .*val not found"),
])
def test_bad_dataset_config_is_a_config_error(dsec_root: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataset(dsec_root, **overrides).validate()


def test_missing_timestamps_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    make_sequence(tmp_path / "train" / "seq", duration_ms=50, frames=2)
    (tmp_path / "train" / "seq" / "images" / "timestamps.txt").unlink()
    with pytest.raises(ConfigError, match=r"seq/images/timestamps\.txt not found"):
        DSECDataset("dsec", str(tmp_path), {"train": "train"}, [500]).validate()


def test_vectorised_render_equals_the_per_event_loop_whatever_the_chunking() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    x, y = rng.integers(0, 64, n).astype(np.uint16), rng.integers(0, 48, n).astype(np.uint16)
    p = rng.integers(0, 2, n).astype(np.uint8)
    expected = render_loop(x, y, p, 64, 48)
    for chunk in (n, 333):
        canvas = EventCanvas(64, 48)
        for start in range(0, n, chunk):
            canvas.add(x[start:start + chunk], y[start:start + chunk], p[start:start + chunk])
        assert np.array_equal(canvas.rgba(), expected)
    assert {tuple(c) for c in expected.reshape(-1, 4)} == {(255, 255, 255, 255), (255, 0, 0, 255), (0, 0, 255, 255)}
    with pytest.raises(ValueError, match="outside the 64x48 sensor"):
        EventCanvas(64, 48).add(np.array([64], np.uint16), np.array([0], np.uint16), np.array([1], np.uint8))


def test_render_split_between_threads_equals_the_per_event_loop() -> None:
    """Chunks large enough to be split between threads (each marking its own copy) give the loop's image, mixed
    with small chunks marked on one thread; events off the sensor are refused there too."""
    rng = np.random.default_rng(1)
    n = 3 * EVENTS_PER_THREAD  # 3 parts when the machine has 3+ CPUs; with 2 CPUs, 2
    x, y = rng.integers(0, 64, n).astype(np.uint16), rng.integers(0, 48, n).astype(np.uint16)
    p = rng.integers(0, 2, n).astype(np.uint8)
    small = 1000
    expected = render_loop(x[:small], y[:small], p[:small], 64, 48)
    negative, positive = np.zeros((48, 64), bool), np.zeros((48, 64), bool)
    negative[y[p == 0], x[p == 0]] = True
    positive[y[p == 1], x[p == 1]] = True
    expected_all = np.where(positive[..., None], RED, np.where(negative[..., None], BLUE, WHITE)).astype(np.uint8)
    canvas = EventCanvas(64, 48)  # as many threads as this machine's CPUs allow, up to 3
    canvas.add(x[:small], y[:small], p[:small])  # one thread
    assert np.array_equal(canvas.rgba(), expected)
    canvas.add(x[small:], y[small:], p[small:])  # split
    assert canvas.bits.shape[0] == min(canvas.max_threads, 2)  # one copy of the bits per thread
    assert np.array_equal(canvas.rgba(), expected_all)
    x[n // 2] = 64
    with pytest.raises(ValueError, match="1 events .* outside the 64x48 sensor"):
        canvas.add(x, y, p)


@pytest.mark.parametrize("settings, message", [
    ({"frames_mode": "move"}, "frames_mode='move'"),
    ({"width": 0}, "width=0"),
    ({"fps": "fast"}, "fps='fast'"),
    ({"preset": "quick"}, "preset='quick'"),
    ({"crf": 52}, "crf=52"),
])
def test_bad_stage_settings_are_config_errors(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EventsStage("events", **settings).validate()


def test_streamed_npz_member_equals_an_in_memory_one_and_refuses_a_wrong_count(tmp_path: Path) -> None:
    values = np.arange(10_000, dtype=np.uint32)
    streamed = StreamedArray(values.shape, values.dtype, lambda: (values[i:i + 999] for i in range(0, 10_000, 999)))
    write_npz(tmp_path / "streamed.npz", {"t": streamed, "count": np.int64(10_000)})
    assert np.array_equal(read_npz(tmp_path / "streamed.npz")["t"], values)
    too_short = StreamedArray((10_001,), values.dtype, lambda: iter([values]))
    with pytest.raises(ValueError, match="chunks gave 10000 elements"):
        write_npz(tmp_path / "short.npz", {"t": too_short})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.npz"]
