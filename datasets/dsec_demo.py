"""The built-in DSEC demo: a tiny event-camera recording in DSEC's layout, so `launch/events.py dataset=dsec_demo`
runs anywhere.

The scene is scikit-image's astronaut photo sliding sideways in front of a 640x480 event sensor; events are what an
ideal event camera would report (a pixel fires when its log brightness has changed by `CONTRAST` since its last
event, checked every `STEP_US`). The photo stops for a while mid-sequence (no events: empty clips), the first frame
is taken before the event stream starts and the last clips end after it (partial clips), so the empty/partial
settings have something to act on. Written per sequence: `events/left/events.h5` (Blosc, `/events/{p,x,y,t}`,
`/ms_to_idx`, `/t_offset`), `events/left/rectify_map.h5` (a mild radial distortion), `images/left/rectified/`
(320x240 PNG at 20 Hz) and `images/timestamps.txt`. Generated once under `root`; the same files on every machine.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
from PIL import Image

from shardprep.datasets.dsec import DSECDataset
from shardprep.runtime.atomic import create_folder_once

SENSOR = (640, 480)
FRAME_SIZE = (320, 240)
SEQUENCES = {"train": "zurich_city_demo_a", "test": "interlaken_demo_a"}
T_OFFSET = 1_650_000_000_000_000
STREAM_MS = 2950
FIRST_FRAME_US = -30_000  # before t_offset: the first clip of each duration is partial
FRAME_PERIOD_US = 50_000
FRAMES = 62
STILL_US = (1_200_000, 2_000_000)  # the photo does not move: no events
SPEED_PX_PER_S = 40.0
STEP_US = 10_000
CONTRAST = 0.5


class DSECDemoDataset(DSECDataset):
    def __init__(self, name: str, root: str, durations_ms: list[int], overlap: float = 0.5,
                 empty_clips: str = "keep", partial_clips: str = "keep", rectify: bool = False) -> None:
        super().__init__(name, str(Path(root).expanduser() / "v1"), {split: split for split in SEQUENCES},
                         durations_ms, overlap, empty_clips, partial_clips, rectify)

    def validate(self) -> None:
        self._generate()
        super().validate()

    def items(self):
        self._generate()
        return super().items()

    def _generate(self) -> None:
        if not self.root.is_dir():
            create_folder_once(self.root, _write_demo)


def _scene() -> np.ndarray:
    """The photo as float RGB in [0, 1], stretched to the sensor's width plus room to slide."""
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((SENSOR[0] + 240, SENSOR[1]), Image.BILINEAR)
    return np.asarray(photo, dtype=np.float32) / 255


def _shift_px(time_us: float) -> float:
    """How far the photo has slid at `time_us` (µs after t_offset): it stands still during STILL_US."""
    moving = min(time_us, STILL_US[0]) + max(0.0, time_us - STILL_US[1])
    return SPEED_PX_PER_S * moving / 1e6


def _view(scene: np.ndarray, time_us: float) -> np.ndarray:
    """The sensor's view (height, width, 3) at `time_us`, with sub-pixel (linear) sliding."""
    shift = _shift_px(time_us) + 100
    whole, fraction = int(np.floor(shift)), shift - np.floor(shift)
    left = scene[:, whole : whole + SENSOR[0]]
    right = scene[:, whole + 1 : whole + 1 + SENSOR[0]]
    return (1 - fraction) * left + fraction * right


def _events(scene: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    grey = scene @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    scene_grey = grey[..., None]
    reference = np.log(_view(scene_grey, 0)[..., 0] + 0.05)
    parts: dict[str, list[np.ndarray]] = {"x": [], "y": [], "t": [], "p": []}
    for step in range(STEP_US, STREAM_MS * 1000 + 1, STEP_US):
        level = np.log(_view(scene_grey, step)[..., 0] + 0.05)
        change = level - reference
        rows, columns = np.nonzero(np.abs(change) >= CONTRAST)
        if rows.size == 0:
            continue
        reference[rows, columns] = level[rows, columns]
        times = step - STEP_US + rng.integers(0, STEP_US, size=rows.size)
        order = np.argsort(times, kind="stable")
        parts["x"].append(columns[order].astype(np.uint16))
        parts["y"].append(rows[order].astype(np.uint16))
        parts["t"].append(times[order].astype(np.uint32))
        parts["p"].append((change[rows, columns] > 0)[order].astype(np.uint8))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _rectify_map() -> np.ndarray:
    """(480, 640, 2) float32: raw pixel -> rectified coordinates, a mild barrel distortion about the centre."""
    columns, rows = np.meshgrid(np.arange(SENSOR[0], dtype=np.float32), np.arange(SENSOR[1], dtype=np.float32))
    centre = np.array([(SENSOR[0] - 1) / 2, (SENSOR[1] - 1) / 2], dtype=np.float32)
    offset = np.stack([columns, rows], axis=-1) - centre
    radius2 = (offset**2).sum(axis=-1, keepdims=True) / float((centre**2).sum())
    return (centre + offset * (1 + 0.05 * radius2)).astype(np.float32)


def _write_sequence(folder: Path, scene: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    events = _events(scene, rng)
    compression = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)
    events_dir = folder / "events" / "left"
    events_dir.mkdir(parents=True)
    with h5py.File(events_dir / "events.h5", "w") as h5:
        for name in ("p", "x", "y", "t"):
            h5.create_dataset(f"events/{name}", data=events[name], chunks=True, **compression)
        edges = np.arange(STREAM_MS + 1, dtype=np.int64) * 1000
        h5.create_dataset("ms_to_idx", data=np.searchsorted(events["t"], edges, side="left").astype(np.uint64),
                          **compression)
        h5.create_dataset("t_offset", data=np.int64(T_OFFSET))
    with h5py.File(events_dir / "rectify_map.h5", "w") as h5:
        h5.create_dataset("rectify_map", data=_rectify_map())
    frames_dir = folder / "images" / "left" / "rectified"
    frames_dir.mkdir(parents=True)
    timestamps = FIRST_FRAME_US + FRAME_PERIOD_US * np.arange(FRAMES, dtype=np.int64)
    for index, time_us in enumerate(timestamps):
        view = np.clip(_view(scene, float(time_us)) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(view).resize(FRAME_SIZE, Image.BILINEAR).save(frames_dir / f"{index:06d}.png")
    (folder / "images" / "timestamps.txt").write_text("".join(f"{T_OFFSET + t}\n" for t in timestamps))


def _write_demo(tmp: Path) -> None:
    scene = _scene()
    for seed, (split, sequence) in enumerate(SEQUENCES.items()):
        _write_sequence(tmp / split / sequence, scene if seed == 0 else scene[:, ::-1].copy(), seed)
