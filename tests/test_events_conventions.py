"""Consumers' conventions: empty and partial clips under each setting (against spans worked out by hand from the
synthetic sequence's layout), each image preset against a hand-drawn image, rectification through a hand-written
rectify_map.h5, and EventGPT's pickled .npy form."""

from __future__ import annotations

from pathlib import Path

import h5py
import numba
import numpy as np
import pytest
from data.dsec_synthetic import make_sequence

from shardprep.datasets.dsec import DSECDataset
from shardprep.runtime.errors import ConfigError
from shardprep.stages.events.render import BLUE, EVENTS_PER_THREAD, RED, EventCanvas
from shardprep.stages.events.slicing import find_window
from shardprep.stages.events.stage import EventsStage, validate_pickled_npy

T_OFFSET = 1_700_000_000_000_000


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Events for 1.9 s after t_offset, none in 0.9-1.6 s; frames every 50 ms from 30 ms before t_offset to 2.17 s."""
    root = tmp_path_factory.mktemp("dsec")
    make_sequence(root / "train" / "seq", t_offset=T_OFFSET, duration_ms=1900, gaps_ms=((900, 1600),),
                  first_frame_us=-30_000, frames=45)
    return root


def clips(root: Path, **settings: str) -> dict[int, tuple[int, int] | None]:
    dataset = DSECDataset("dsec", str(root), {"train": "train"}, [500], **settings)
    dataset.validate()
    return {dataset.clip(item).index: _relative(dataset.clip(item)) for item in dataset.items()}


def _relative(clip) -> tuple[int, int] | None:
    return None if clip.covered is None else (clip.covered[0] - clip.start_us, clip.covered[1] - clip.start_us)


# 500 ms clips start at -30 ms + 250 ms k (k = 0..6, the last ending at 1.97 s <= the last frame at 2.17 s):
# clip 0 [-30, 470) starts before the stream, clip 6 [1470, 1970) ends after it (1.9 s), clip 4 [970, 1470) lies
# in the gap.
def test_keep_keeps_every_clip_without_reading_the_events(root: Path) -> None:
    assert clips(root) == dict.fromkeys(range(7))


def test_partial_flag_records_the_covered_span(root: Path) -> None:
    spans = clips(root, partial_clips="flag")
    assert spans == {0: (30_000, 500_000), 1: (0, 500_000), 2: (0, 500_000), 3: (0, 500_000), 4: (0, 500_000),
                     5: (0, 500_000), 6: (0, 430_000)}


def test_partial_skip_leaves_out_what_dsecs_eventslicer_refuses(root: Path) -> None:
    assert sorted(clips(root, partial_clips="skip")) == [1, 2, 3, 4, 5]


def test_empty_skip_leaves_out_the_clip_without_events(root: Path) -> None:
    assert sorted(clips(root, empty_clips="skip")) == [0, 1, 2, 3, 5, 6]
    assert sorted(clips(root, empty_clips="skip", partial_clips="skip")) == [1, 2, 3, 5]


def test_bad_clip_settings_are_config_errors(root: Path) -> None:
    with pytest.raises(ConfigError, match="dataset.empty_clips='drop'"):
        clips(root, empty_clips="drop")
    with pytest.raises(ConfigError, match="dataset.partial_clips='mark'"):
        clips(root, partial_clips="mark")
    with pytest.raises(ConfigError, match="rectify_map.h5"):
        clips(root, rectify=True)


# Three pixels: (1, 1) positive then negative, (2, 1) negative then positive, (3, 2) positive only.
X = np.array([1, 2, 1, 2, 3], np.uint16)
Y = np.array([1, 1, 1, 1, 2], np.uint16)
P = np.array([1, 0, 0, 1, 1], np.uint8)
EXPECTED = {  # pixel colours by draw order, drawn by hand
    "positive_on_top": {(1, 1): RED, (2, 1): RED, (3, 2): RED},
    "negative_on_top": {(1, 1): BLUE, (2, 1): BLUE, (3, 2): RED},
    "last_event": {(1, 1): BLUE, (2, 1): RED, (3, 2): RED},
}


def hand_drawn(pixels: dict[tuple[int, int], tuple[int, ...]], width: int = 8, height: int = 4) -> np.ndarray:
    image = np.full((height, width, 4), 255, np.uint8)
    for (x, y), colour in pixels.items():
        image[y, x] = colour
    return image


@pytest.mark.parametrize("order", sorted(EXPECTED))
def test_each_draw_order_against_a_hand_drawn_image(order: str) -> None:
    canvas = EventCanvas(8, 4, order)
    canvas.add(X[:3], Y[:3], P[:3])  # two chunks: the order holds across them
    canvas.add(X[3:], Y[3:], P[3:])
    assert np.array_equal(canvas.rgba(), hand_drawn(EXPECTED[order]))


def test_last_event_wins_across_threads() -> None:
    """A chunk split between threads: the later part's events win, and so do a later chunk's."""
    half = 2 * EVENTS_PER_THREAD
    x = np.zeros(2 * half, np.uint16)
    y = np.zeros(2 * half, np.uint16)
    p = np.concatenate([np.ones(half, np.uint8), np.zeros(half, np.uint8)])
    x[: half - 1] = 1  # pixel (1, 0): positive events only in the first half
    canvas = EventCanvas(4, 2, "last_event")
    canvas.max_threads = min(3, numba.config.NUMBA_NUM_THREADS)  # 2 or 3 parts on this machine
    canvas.add(x, y, p)
    assert np.array_equal(canvas.rgba(), hand_drawn({(0, 0): BLUE, (1, 0): RED}, 4, 2))
    canvas.add(np.array([0], np.uint16), np.array([0], np.uint16), np.array([1], np.uint8))
    assert tuple(canvas.rgba()[0, 0]) == RED


def events_file(path: Path, x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> Path:
    """A DSEC events.h5 written the way the DSEC tools read it: /events/{p,x,y,t}, /ms_to_idx, /t_offset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        for name, values in (("p", p), ("x", x), ("y", y), ("t", t)):
            h5.create_dataset(f"events/{name}", data=values)
        ms = np.arange(int(t.max()) // 1000 + 2) * 1000
        h5.create_dataset("ms_to_idx", data=np.searchsorted(t, ms, side="left").astype(np.uint64))
        h5.create_dataset("t_offset", data=np.int64(T_OFFSET))
    return path


class Clip:
    """The parts of a dataset clip the stage's rendering reads."""

    def __init__(self, rectify_file: Path | None = None) -> None:
        self.rectify_file = rectify_file
        self.start_us, self.end_us, self.duration_ms = T_OFFSET, T_OFFSET + 10_000, 10


def test_seed_and_eventgpt_presets_split_the_clip_into_five_images(tmp_path: Path) -> None:
    """7 events, 5 images: one event each for images 0-3, the last three for image 4 (7 // 5 = 1, the remainder
    to the last part)."""
    x = np.array([0, 1, 2, 3, 4, 4, 4], np.uint16)
    y = np.zeros(7, np.uint16)
    p = np.array([1, 0, 1, 0, 1, 0, 1], np.uint8)
    path = events_file(tmp_path / "events.h5", x, y, p, np.arange(7, dtype=np.uint32) * 1000)
    window = find_window(path, T_OFFSET, T_OFFSET + 10_000)
    for preset, last in (("seed", BLUE), ("eventgpt", RED)):
        stage = EventsStage("events", width=8, height=2, event_image=preset)
        stage.validate()
        images = stage.render(Clip(), window)
        expected = [hand_drawn({(0, 0): RED}, 8, 2), hand_drawn({(1, 0): BLUE}, 8, 2), hand_drawn({(2, 0): RED}, 8, 2),
                    hand_drawn({(3, 0): BLUE}, 8, 2), hand_drawn({(4, 0): last}, 8, 2)]
        assert len(images) == 5 and all(np.array_equal(a, b) for a, b in zip(images, expected)), preset
        stage._write_images(images, tmp_path / f"{preset}.images")
        stage.validate_image_folder(tmp_path / f"{preset}.images")  # RGB, 000000.png ... 000004.png
    stage = EventsStage("events", event_image="seed", images_per_clip=2, draw_order="last_event")
    assert (stage.convention.images_per_clip, stage.convention.draw_order, stage.convention.mode) == (2, "last_event", "RGB")
    for bad in ({"event_image": "llava"}, {"images_per_clip": 0}, {"draw_order": "red"}, {"image_mode": "L"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            EventsStage("events", **bad).validate()


def test_rectified_events_and_image(tmp_path: Path) -> None:
    """rectify_map[y, x] = (x + 0.6, y + 0.2): x, y become those floats, the image shows them at (x + 1, y); an
    event mapped off the sensor stays in the arrays and is left out of the image."""
    columns, rows = np.meshgrid(np.arange(8, dtype=np.float32), np.arange(2, dtype=np.float32))
    table = np.stack([columns + 0.6, rows + 0.2], axis=-1)
    rectify = tmp_path / "rectify_map.h5"
    with h5py.File(rectify, "w") as h5:
        h5.create_dataset("rectify_map", data=table)
    path = events_file(tmp_path / "events.h5", np.array([0, 3, 7], np.uint16), np.array([0, 1, 1], np.uint16),
                       np.array([1, 0, 1], np.uint8), np.array([0, 1000, 2000], np.uint32))
    stage = EventsStage("events", width=8, height=2)
    window = find_window(path, T_OFFSET, T_OFFSET + 10_000)
    chunk = next(stage._chunks(Clip(rectify), window, ("x", "y")))
    assert np.allclose(chunk["x"], [0.6, 3.6, 7.6]) and np.allclose(chunk["y"], [0.2, 1.2, 1.2])
    assert chunk["x"].dtype == np.float32
    (image,) = stage.render(Clip(rectify), window)
    assert np.array_equal(image, hand_drawn({(1, 0): RED, (4, 1): BLUE}, 8, 2))


def test_eventgpt_npy_is_the_pickled_dict_its_loader_reads(tmp_path: Path) -> None:
    x = np.array([5, 6], np.uint16)
    path = events_file(tmp_path / "events.h5", x, np.array([1, 2], np.uint16), np.array([0, 1], np.uint8),
                       np.array([100, 2500], np.uint32))
    stage = EventsStage("events", eventgpt_npy=True)
    assert [o.name for o in stage.outputs][-1] == "eventgpt"
    window = find_window(path, T_OFFSET, T_OFFSET + 10_000)
    target = tmp_path / "clip.eventgpt.npy"
    stage._write_pickled_npy(Clip(), window, target)
    validate_pickled_npy(target)
    # What EventGPT's process_event_data does (np.load(allow_pickle=True).item()); this test wrote the file itself.
    data = np.load(target, allow_pickle=True).item()
    assert sorted(data) == ["duration_ms", "num_events", "p", "t", "time_end", "time_start", "x", "y"]
    assert np.array_equal(data["x"], x) and np.array_equal(data["t"], T_OFFSET + np.array([100, 2500]))
    target.write_bytes(target.read_bytes()[:-20])
    with pytest.raises(ValueError, match="damaged pickle"):
        validate_pickled_npy(target)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(ValueError, match="expected one pickled dict"):
        validate_pickled_npy(tmp_path / "plain.npy")
