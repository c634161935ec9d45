"""Videos as items: a folder of video files (or a list file naming them), one item per video or per fixed-length clip.

External tools (camera/depth estimation, point tracking, hand pose) read the video themselves, so `read` returns
where the item is (path and frame range), never decoded frames. Item ids come from the path relative to the root, so
they are stable across machines and listing orders; the first folder below the root is the item's `group` (e.g.
`train`, `val`), which the packaging merge uses to pick the training split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
DEFAULT_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".npy")


class VideoDataset(Dataset):
    """Videos under `root` (recursively) with one of `extensions`, or the paths listed in `list_file` (relative to
    `root` unless absolute, one per line, `#` comments). `clip_frames` > 0 cuts each video into clips of that many
    frames (the last one shorter); it needs the frame count, which is read from `.npy` headers or through imageio.
    """

    def __init__(self, name: str, root: str, list_file: str | None = None,
                 extensions: tuple[str, ...] | list[str] = DEFAULT_EXTENSIONS, clip_frames: int = 0) -> None:
        super().__init__(name)
        self.root = Path(root).expanduser()
        self.list_file = Path(list_file).expanduser() if list_file else None
        self.extensions = tuple(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions)
        self.clip_frames = int(clip_frames)
        self._videos: list[Path] | None = None
        self._ids: dict[str, int] | None = None

    def validate(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(f"video root not found: {self.root} (set dataset.root)")
        if self.list_file is not None and not self.list_file.is_file():
            raise ConfigError(f"video list not found: {self.list_file} (set dataset.list_file, or null to scan root)")
        if self.clip_frames < 0:
            raise ConfigError(f"dataset.clip_frames={self.clip_frames}: use 0 (whole videos) or a frame count")
        missing = [path for path in self.videos() if not path.is_file()]
        if missing:
            raise ConfigError(f"{len(missing)} listed video(s) not found, first: {missing[0]} (fix {self.list_file})")

    def videos(self) -> list[Path]:
        """Video paths, sorted by their path relative to the root (a fixed order whatever the file system says)."""
        if self._videos is None:
            if self.list_file is not None:
                lines = [line.split("#", 1)[0].strip() for line in self.list_file.read_text().splitlines()]
                paths = [self.root / line for line in lines if line]
            else:
                paths = [p for p in self.root.rglob("*") if p.suffix.lower() in self.extensions and p.is_file()]
            self._videos = sorted(paths, key=lambda p: self._relative(p).as_posix())
        return self._videos

    def _relative(self, path: Path) -> Path:
        return path.relative_to(self.root) if path.is_relative_to(self.root) else Path(path.name)

    def video_id(self, path: Path) -> str:
        """`train/cam 1/a.mp4` -> `train__cam_1__a`: the relative path without extension, made filesystem-safe."""
        relative = self._relative(path).with_suffix("")
        return "__".join(_UNSAFE.sub("_", part) for part in relative.parts)

    def items(self) -> list[Item]:
        items: list[Item] = []
        for path in self.videos():
            video = self.video_id(path)
            group = self._relative(path).parts[0] if len(self._relative(path).parts) > 1 else ""
            if self.clip_frames == 0:
                items.append(Item(id=video, sequence=video, weight=_weight(path), group=group, index=len(items)))
                continue
            frames = count_frames(path)
            if frames is None:
                raise ConfigError(f"{path}: cannot count its frames (install imageio[ffmpeg]) to cut clips; "
                                  "set dataset.clip_frames=0 for whole videos")
            for start in range(0, frames, self.clip_frames):
                end = min(frames, start + self.clip_frames)
                items.append(Item(id=f"{video}.f{start:06d}", sequence=video, weight=end - start, group=group,
                                  index=len(items)))
        return items

    def read(self, item: Item) -> dict[str, Any]:
        """Where the item's frames are: `path`, and `start`/`end` (end exclusive; whole video: 0 and the count)."""
        path = self.videos()[self._video_index(item)]
        if not path.is_file():
            raise FileNotFoundError(f"video {path} of item {item.id} is gone: restore it or launch with a new out_dir")
        start = int(item.id.rsplit(".f", 1)[1]) if self.clip_frames else 0
        end = start + item.weight if self.clip_frames else (count_frames(path) or -1)  # -1: count unknown
        return {"path": path, "start": start, "end": end}

    def _video_index(self, item: Item) -> int:
        if self._ids is None:
            self._ids = {self.video_id(path): i for i, path in enumerate(self.videos())}
        return self._ids[item.sequence]

    def fingerprint_files(self) -> list[Path]:
        # Video contents are not hashed (too large to read at every launch); the list file and the ids are.
        return [self.list_file] if self.list_file else []


def _weight(path: Path) -> int:
    """A whole video's share of the work: its frames where the header says so cheaply (.npy), else its size in MiB.

    Probing every compressed video for its frame count would cost each array task seconds per thousand videos just
    to list the items; the size is proportional enough to balance shards.
    """
    if path.suffix.lower() == ".npy":
        try:
            return count_frames(path) or 1
        except (OSError, ValueError, EOFError):  # a broken file is that item's error when it is read, not the list's
            return 1
    return max(1, path.stat().st_size >> 20)


def count_frames(path: Path) -> int | None:
    """Frame count from the `.npy` header (no data read), or counted by imageio's ffmpeg plugin; None where it
    cannot be known."""
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(handle)
        return int(shape[0]) if shape else None
    try:
        import imageio.v2 as imageio

        with imageio.get_reader(path) as reader:  # the ffmpeg plugin counts the stream's frames exactly
            frames = reader.count_frames() if hasattr(reader, "count_frames") else len(reader)
    except Exception:  # no imageio, no backend for the format, or an unreadable stream
        return None
    return int(frames) if 0 < frames < float("inf") else None
