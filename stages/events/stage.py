"""Per DSEC clip, four outputs, each its own checkpoint so a partly done clip resumes at the missing one:

- `events` (`<id>.events.npz`): x, y (u16), t (u32, µs from the clip start), p (u8) and the clip's metadata, streamed
  from the events file chunk by chunk into the NPZ (memory stays at one chunk, whatever the clip's event count);
- `image` (`<id>.png`): the event image, RGBA, rendered chunk by chunk;
- `frames` (`<id>.frames/`): a folder with the clip's frames as 000000.png... (hard links, symbolic links or
  copies of the originals) and their absolute timestamps in `timestamps.txt`;
- `video` (`<id>.mp4`): those frames as an H.264 yuv420p MP4 at `fps`.

Only the outputs in `Work.todo` are produced.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from shardprep.datasets.dsec import Clip, ClipData
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import StreamedArray
from shardprep.stages.base import ArrayOutput, FileOutput, ItemResult, Stage, Work
from shardprep.stages.events.render import EventCanvas
from shardprep.stages.events.slicing import DTYPES, EventWindow, iter_chunks
from shardprep.stages.events.video import encode_mp4, validate_mp4

FRAME_MODES = ("hardlink", "symlink", "copy")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
TIMESTAMPS = "timestamps.txt"
EVENT_ARRAYS = {"x": (None,), "y": (None,), "t": (None,), "p": (None,), "start_us": (), "end_us": (),
                "duration_ms": (), "count": ()}


class EventsStage(Stage):
    needs = frozenset({"clip"})  # DSEC-style clips: events, frames and the window (datasets/dsec.py)

    def __init__(self, name: str, batch_size: int = 1, read_workers: int = 2, width: int = 640, height: int = 480,
                 chunk_events: int = 4_000_000, frames_mode: str = "hardlink", fps: float = 20, crf: int = 23,
                 preset: str = "medium") -> None:
        super().__init__(name, batch_size, read_workers)
        self.width, self.height = width, height
        self.chunk_events = chunk_events
        self.frames_mode = frames_mode
        self.fps, self.crf, self.preset = fps, crf, preset
        self.outputs = (
            ArrayOutput("events", EVENT_ARRAYS, suffix="events.npz"),
            FileOutput("image", "png", self.validate_image),
            FileOutput("frames", "frames", validate_frames),
            FileOutput("video", "mp4", validate_mp4),
        )

    def validate(self) -> None:
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
            image = self.render(window)
            result["image"] = lambda path: Image.fromarray(image, "RGBA").save(path, format="PNG")
        if "frames" in todo:
            result["frames"] = partial(write_frames, clip, self.frames_mode)
        if "video" in todo:
            result["video"] = partial(self._write_video, clip)
        return result

    def event_arrays(self, clip: Clip, window: EventWindow) -> dict[str, np.ndarray | StreamedArray]:
        """The `events` NPZ: columns are streamed from the events file when the runtime writes it."""
        relative_start = clip.start_us - window.t_offset

        def column(name: str) -> Callable[[], Iterator[np.ndarray]]:
            def chunks() -> Iterator[np.ndarray]:
                for chunk in iter_chunks(window, (name,), self.chunk_events):
                    values = chunk[name]
                    if name == "t":  # µs from the clip start; the window guarantees 0 <= t < duration
                        values = (values.astype(np.int64) - relative_start).astype(np.uint32)
                    yield values.astype(DTYPES[name], copy=False)
            return chunks

        arrays: dict[str, np.ndarray | StreamedArray] = {
            name: StreamedArray((window.count,), np.dtype(DTYPES[name]), column(name)) for name in DTYPES
        }
        arrays |= {
            "start_us": np.int64(clip.start_us),
            "end_us": np.int64(clip.end_us),
            "duration_ms": np.int64(clip.duration_ms),
            "count": np.int64(window.count),
        }
        return arrays

    def render(self, window: EventWindow) -> np.ndarray:
        canvas = EventCanvas(self.width, self.height)
        for chunk in iter_chunks(window, ("x", "y", "p"), self.chunk_events):
            canvas.add(chunk["x"], chunk["y"], chunk["p"])
        return canvas.rgba()

    def _write_video(self, clip: Clip, path: Path) -> None:
        encode_mp4(path, clip.frames, self.fps, self.crf, self.preset)

    def validate_image(self, path: Path) -> None:
        with Image.open(path) as image:
            image.verify()
            if image.format != "PNG" or image.mode != "RGBA" or image.size != (self.width, self.height):
                raise ValueError(f"{path}: {image.format} {image.mode} {image.size}, expected PNG RGBA "
                                 f"{(self.width, self.height)}")


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
