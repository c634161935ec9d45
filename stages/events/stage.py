"""Per DSEC clip, four outputs, each its own checkpoint so a partly done clip resumes at the missing one:

- `events` (`<id>.events.npz`): x, y (u16), t (u32, µs from the clip start), p (u8) and the clip's metadata, streamed
  from the events file chunk by chunk into the NPZ (memory stays at one chunk, whatever the clip's event count);
- `image` (`<id>.png`, or `<id>.images/000000.png...` for several images per clip): the event image(s), rendered
  chunk by chunk by the configured convention (presets.py);
- `frames` (`<id>.frames/`): a folder with the clip's frames as 000000.png... (hard links, symbolic links or
  copies of the originals) and their absolute timestamps in `timestamps.txt`;
- `video` (`<id>.mp4`): those frames as an H.264 yuv420p MP4 at `fps`.

With `eventgpt_npy`, also `eventgpt` (`<id>.eventgpt.npy`): the events as the pickled dict EventGPT's loader
reads (`np.load(..., allow_pickle=True).item()`), an opt-in for consumers that cannot read the NPZ: it holds the
whole clip in memory while written, and this project never loads it back (its check walks the pickle's opcodes
without running them).

Events of a clip whose sequence has `rectify_file` are rectified through its `rectify_map.h5` (DSEC's raw pixel ->
rectified float coordinates): `x`, `y` in the NPZ are then float32, and the image shows each event at its rounded
rectified pixel (those mapped off the sensor are left out of the image only).

Only the outputs in `Work.todo` are produced.
"""

from __future__ import annotations

import os
import pickletools
import shutil
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import h5py
from PIL import Image

from shardprep.datasets.dsec import Clip, ClipData
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import StreamedArray
from shardprep.stages.base import ArrayOutput, FileOutput, ItemResult, Stage, Work
from shardprep.stages.events.presets import PRESETS, image_convention
from shardprep.stages.events.render import EventCanvas
from shardprep.stages.events.slicing import DTYPES, EventWindow, iter_chunks
from shardprep.stages.events.video import encode_mp4, validate_mp4

FRAME_MODES = ("hardlink", "symlink", "copy")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
TIMESTAMPS = "timestamps.txt"
EVENT_ARRAYS = {"x": (None,), "y": (None,), "t": (None,), "p": (None,), "start_us": (), "end_us": (),
                "duration_ms": (), "count": ()}
RECTIFIED_DTYPE = np.float32


class EventsStage(Stage):
    needs = frozenset({"clip"})  # DSEC-style clips: events, frames and the window (datasets/dsec.py)

    def __init__(self, name: str, batch_size: int = 1, read_workers: int = 2, width: int = 640, height: int = 480,
                 chunk_events: int = 4_000_000, frames_mode: str = "hardlink", fps: float = 20, crf: int = 23,
                 preset: str = "medium", event_image: str = "shardprep", images_per_clip: int | None = None,
                 draw_order: str | None = None, image_mode: str | None = None, eventgpt_npy: bool = False) -> None:
        super().__init__(name, batch_size, read_workers)
        self.width, self.height = width, height
        self.chunk_events = chunk_events
        self.frames_mode = frames_mode
        self.fps, self.crf, self.preset = fps, crf, preset
        self.eventgpt_npy = eventgpt_npy
        self._convention_error: ConfigError | None = None
        try:
            self.convention = image_convention(event_image, images_per_clip, draw_order, image_mode)
        except ConfigError as error:  # raised by validate(), before anything is submitted
            self._convention_error, self.convention = error, PRESETS["shardprep"]
        several = self.convention.images_per_clip > 1
        self.outputs = (
            ArrayOutput("events", EVENT_ARRAYS, suffix="events.npz"),
            FileOutput("image", "images" if several else "png",
                       self.validate_image_folder if several else self.validate_image),
            FileOutput("frames", "frames", validate_frames),
            FileOutput("video", "mp4", validate_mp4),
        ) + ((FileOutput("eventgpt", "eventgpt.npy", validate_pickled_npy),) if eventgpt_npy else ())
        self._rectify_maps: dict[Path, np.ndarray] = {}

    def validate(self) -> None:
        if self._convention_error is not None:
            raise self._convention_error
        if not isinstance(self.eventgpt_npy, bool):
            raise ConfigError(f"stage.eventgpt_npy={self.eventgpt_npy!r}: true or false")
        if self.frames_mode not in FRAME_MODES:
            raise ConfigError(f"stage.frames_mode={self.frames_mode!r}: use one of {', '.join(FRAME_MODES)}")
        for key in ("width", "height", "chunk_events"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"stage.{key}={value!r}: must be a whole number >= 1")
        if not isinstance(self.fps, (int, float)) or isinstance(self.fps, bool) or self.fps <= 0:
            raise ConfigError(f"stage.fps={self.fps!r}: must be a number of frames per second > 0")
        if self.preset not in X264_PRESETS:
            raise ConfigError(f"stage.preset={self.preset!r}: use one of {', '.join(X264_PRESETS)}")
        if not isinstance(self.crf, int) or isinstance(self.crf, bool) or not 0 <= self.crf <= 51:
            raise ConfigError(f"stage.crf={self.crf!r}: libx264 takes a whole number in 0..51 (lower is better)")

    def process(self, batch: Sequence[Work]) -> list[ItemResult | BaseException]:
        results: list[ItemResult | BaseException] = []
        for work in batch:
            try:
                results.append(self._clip(work.payload, work.todo))
            except Exception as error:  # one bad clip is recorded, the batch goes on
                results.append(error)
        return results

    def _clip(self, data: ClipData, todo: frozenset[str]) -> ItemResult:
        clip, window = data.clip, data.events
        result: dict[str, object] = {}
        if "events" in todo:
            result["events"] = self.event_arrays(clip, window)
        if "image" in todo:
            images = self.render(clip, window)
            result["image"] = partial(self._write_images, images)
        if "frames" in todo:
            result["frames"] = partial(write_frames, clip, self.frames_mode)
        if "video" in todo:
            result["video"] = partial(self._write_video, clip)
        if "eventgpt" in todo:
            result["eventgpt"] = partial(self._write_pickled_npy, clip, window)
        return result

    def _write_images(self, images: list[np.ndarray], path: Path) -> None:
        """One PNG at `path`, or for several images a folder of 000000.png..."""
        pictures = [Image.fromarray(image, "RGBA").convert(self.convention.mode) for image in images]
        if self.convention.images_per_clip == 1:
            pictures[0].save(path, format="PNG")
            return
        path.mkdir()
        for index, picture in enumerate(pictures):
            picture.save(path / f"{index:06d}.png", format="PNG")

    def _write_pickled_npy(self, clip: Clip, window: EventWindow, path: Path) -> None:
        """EventGPT's form: a dict {p, t, x, y, time_start, time_end, duration_ms, num_events} saved with np.save
        (pickled), `t` absolute µs (int64) as the seed's builder writes it."""
        columns = {name: [] for name in ("p", "t", "x", "y")}
        for chunk in self._chunks(clip, window, tuple(columns)):
            for name in columns:
                columns[name].append(chunk[name])
        data = {name: np.concatenate(parts) if parts else np.zeros(0, DTYPES.get(name, RECTIFIED_DTYPE))
                for name, parts in columns.items()}
        data["t"] = data["t"].astype(np.int64) + window.t_offset
        data |= {"time_start": clip.start_us, "time_end": clip.end_us, "duration_ms": clip.duration_ms,
                 "num_events": window.count}
        with open(path, "wb") as handle:
            np.save(handle, data, allow_pickle=True)

    def _chunks(self, clip: Clip, window: EventWindow, columns: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
        """The window's chunks; with a rectify map, x and y are the rectified float coordinates."""
        if clip.rectify_file is None:
            yield from iter_chunks(window, columns, self.chunk_events)
            return
        wanted = tuple(dict.fromkeys([*columns, "x", "y"]))
        rectify = self._rectify_map(clip.rectify_file)
        for chunk in iter_chunks(window, wanted, self.chunk_events):
            if chunk["x"].size and (int(chunk["x"].max()) >= rectify.shape[1] or int(chunk["y"].max()) >= rectify.shape[0]):
                raise ValueError(f"{window.path}: events up to ({int(chunk['x'].max())}, {int(chunk['y'].max())}) "
                                 f"fall outside {clip.rectify_file}'s {rectify.shape[1]}x{rectify.shape[0]} map")
            mapped = rectify[chunk["y"], chunk["x"]]
            chunk["x"], chunk["y"] = mapped[:, 0], mapped[:, 1]
            yield {name: chunk[name] for name in columns}

    def _rectify_map(self, path: Path) -> np.ndarray:
        if path not in self._rectify_maps:
            try:
                with h5py.File(path, "r") as h5:
                    table = np.asarray(h5["rectify_map"], dtype=RECTIFIED_DTYPE)
            except (OSError, KeyError) as error:
                raise ValueError(f"{path}: cannot read /rectify_map ({error}): re-download the sequence's "
                                 "rectify_map.h5") from None
            if table.ndim != 3 or table.shape[2] != 2:
                raise ValueError(f"{path}: /rectify_map has shape {table.shape}, expected (height, width, 2)")
            self._rectify_maps[path] = table
        return self._rectify_maps[path]

    def event_arrays(self, clip: Clip, window: EventWindow) -> dict[str, np.ndarray | StreamedArray]:
        """The `events` NPZ: columns are streamed from the events file when the runtime writes it."""
        relative_start = clip.start_us - window.t_offset

        dtypes = {name: np.dtype(RECTIFIED_DTYPE if clip.rectify_file and name in "xy" else dtype)
                  for name, dtype in DTYPES.items()}

        def column(name: str) -> Callable[[], Iterator[np.ndarray]]:
            def chunks() -> Iterator[np.ndarray]:
                for chunk in self._chunks(clip, window, (name,)):
                    values = chunk[name]
                    if name == "t":  # µs from the clip start; the window guarantees 0 <= t < duration
                        values = (values.astype(np.int64) - relative_start).astype(np.uint32)
                    yield values.astype(dtypes[name], copy=False)
            return chunks

        arrays: dict[str, np.ndarray | StreamedArray] = {
            name: StreamedArray((window.count,), dtypes[name], column(name)) for name in DTYPES
        }
        arrays |= {
            "start_us": np.int64(clip.start_us),
            "end_us": np.int64(clip.end_us),
            "duration_ms": np.int64(clip.duration_ms),
            "count": np.int64(window.count),
        }
        return arrays

    def render(self, clip: Clip, window: EventWindow) -> list[np.ndarray]:
        """The clip's `images_per_clip` RGBA images: image i from events [i q, (i + 1) q) of the window, q = count //
        images, the last image to the window's end (EventGPT's split by count)."""
        images = self.convention.images_per_clip
        canvases = [EventCanvas(self.width, self.height, self.convention.draw_order) for _ in range(images)]
        share = window.count // images
        bounds = [index * share for index in range(images)] + [window.count]
        begin = 0
        for chunk in self._chunks(clip, window, ("x", "y", "p")):
            end = begin + chunk["p"].size
            for index, canvas in enumerate(canvases):
                low, high = max(bounds[index], begin) - begin, min(bounds[index + 1], end) - begin
                if low < high:
                    x, y, p = chunk["x"][low:high], chunk["y"][low:high], chunk["p"][low:high]
                    if clip.rectify_file is not None:
                        x, y, p = _on_sensor(x, y, p, self.width, self.height)
                    canvas.add(x, y, p)
            begin = end
        return [canvas.rgba() for canvas in canvases]

    def _write_video(self, clip: Clip, path: Path) -> None:
        encode_mp4(path, clip.frames, self.fps, self.crf, self.preset)

    def validate_image(self, path: Path) -> None:
        mode = self.convention.mode
        with Image.open(path) as image:
            image.verify()
            if image.format != "PNG" or image.mode != mode or image.size != (self.width, self.height):
                raise ValueError(f"{path}: {image.format} {image.mode} {image.size}, expected PNG {mode} "
                                 f"{(self.width, self.height)}")

    def validate_image_folder(self, folder: Path) -> None:
        names = sorted(p.name for p in folder.iterdir())
        expected = [f"{index:06d}.png" for index in range(self.convention.images_per_clip)]
        if names != expected:
            raise ValueError(f"{folder}: holds {names[:3]}..., expected {expected[0]}..{expected[-1]}")
        for name in names:
            self.validate_image(folder / name)


def _on_sensor(x: np.ndarray, y: np.ndarray, p: np.ndarray, width: int,
               height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rectified float coordinates rounded to pixels, without the events mapped off the sensor."""
    column, row = np.floor(x + 0.5), np.floor(y + 0.5)
    inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
    return column[inside].astype(np.uint16), row[inside].astype(np.uint16), p[inside]


def validate_pickled_npy(path: Path) -> None:
    """A whole `.npy` of one pickled object: the header says so and the pickle's opcodes run to STOP. Nothing is
    unpickled (pickletools only reads the opcodes)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
        if dtype != np.dtype(object) or shape != ():
            raise ValueError(f"{path}: a {dtype} array of shape {shape}, expected one pickled dict")
        try:
            for _ in pickletools.genops(handle):
                pass
        except Exception as error:  # a torn pickle ends without STOP, or with an opcode cut short
            raise ValueError(f"{path}: damaged pickle ({error})") from None


def write_frames(clip: Clip, mode: str, folder: Path) -> None:
    """Link or copy the clip's frames into `folder` as 000000.png..., with their timestamps."""
    folder.mkdir()
    for index, source in enumerate(clip.frames):
        if not source.is_file():
            raise FileNotFoundError(f"{source}: frame not found: re-extract the sequence's images")
        target = folder / f"{index:06d}{source.suffix}"
        if mode == "symlink":
            target.symlink_to(source.resolve())
        elif mode == "hardlink":
            try:
                os.link(source, target)
            except OSError:  # another file system, or links not allowed there
                shutil.copyfile(source, target)
        else:
            shutil.copyfile(source, target)
    (folder / TIMESTAMPS).write_text("".join(f"{t}\n" for t in clip.frame_timestamps))


def validate_frames(folder: Path) -> None:
    """Whole when `timestamps.txt` lists one timestamp per frame file and every frame (or link target) exists."""
    lines = (folder / TIMESTAMPS).read_text().split()
    for index in range(len(lines)):
        if not (folder / f"{index:06d}.png").exists():
            raise ValueError(f"{folder}: frame {index:06d}.png listed in {TIMESTAMPS} is missing")
    extra = len([p for p in folder.iterdir() if p.name != TIMESTAMPS]) - len(lines)
    if extra:
        raise ValueError(f"{folder}: {extra} more frame files than {TIMESTAMPS} lists")
