"""DSEC event-camera sequences cut into overlapping clips: one item per (split, duration, sequence, clip).

Clips are laid on each sequence's frame timestamps (`images/timestamps.txt`, absolute µs): a clip of duration D
starts every D·(1 − overlap) from the first frame and must end at or before the last one. Enumerating items reads
only these small text files, so a missing or corrupt `events.h5` is one clip's recorded error, not a failed launch.
`read` opens the events file, checks its structure and finds the clip's event index range (an O(1) lookup); the
events themselves are streamed later by the stage, never loaded here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.errors import ConfigError
from shardprep.stages.events.slicing import EventWindow, find_window

EVENTS_FILE = Path("events/left/events.h5")
FRAMES_DIR = Path("images/left/rectified")
TIMESTAMPS_FILE = Path("images/timestamps.txt")
# Clip-relative event times are stored as u32 µs.
MAX_DURATION_MS = (2**32 - 1) // 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Clip:
    """Where one clip's data is: its time span (absolute µs, [start, end)), events file and frames."""

    split: str
    duration_ms: int
    sequence: str
    index: int
    start_us: int
    end_us: int
    events_file: Path
    frames: tuple[Path, ...]
    frame_timestamps: tuple[int, ...]


@dataclass(frozen=True)
class ClipData:
    """What `read` hands the stage: the clip and its checked event index range."""

    clip: Clip
    events: EventWindow


def duration_label(duration_ms: int) -> str:
    """500 -> "500ms", 2000 -> "2s": the label in item ids, groups and merged file names."""
    return f"{duration_ms // 1000}s" if duration_ms % 1000 == 0 else f"{duration_ms}ms"


class DSECDataset(Dataset):
    """`splits` maps a split name to its folder of sequences (relative to `root`), or to {events: ..., images: ...}
    for DSEC's download layout where `train_events/` and `train_images/` are separate folders."""

    gives = frozenset({"clip"})

    def __init__(self, name: str, root: str, splits: Mapping[str, str | Mapping[str, str]],
                 durations_ms: list[int], overlap: float = 0.5) -> None:
        super().__init__(name)
        self.root = Path(root).expanduser()
        self.splits = dict(splits)
        self.durations_ms = list(durations_ms)
        self.overlap = overlap
        self._clips: dict[str, Clip] | None = None

    def _split_roots(self, split: str) -> tuple[Path, Path]:
        """(events root, images root) of a split."""
        value = self.splits[split]
        if isinstance(value, Mapping):
            return self.root / value["events"], self.root / value["images"]
        return self.root / value, self.root / value

    def validate(self) -> None:
        if not self.splits:
            raise ConfigError("dataset.splits is empty: name at least one split folder, e.g. {train: train}")
        for split in self.splits:
            for folder in self._split_roots(split):
                if not folder.is_dir():
                    raise ConfigError(f"DSEC split {split!r}: folder {folder} not found: set dataset.root "
                                      "(or SHARDPREP_DSEC_ROOT) and dataset.splits")
        for duration in self.durations_ms:
            if not isinstance(duration, int) or isinstance(duration, bool) or not 0 < duration <= MAX_DURATION_MS:
                raise ConfigError(f"dataset.durations_ms: {duration!r} is not a whole number of ms in "
                                  f"1..{MAX_DURATION_MS}")
        if len(set(self.durations_ms)) != len(self.durations_ms):
            raise ConfigError(f"dataset.durations_ms={self.durations_ms} lists a duration twice")
        if not isinstance(self.overlap, (int, float)) or not 0 <= self.overlap < 1:
            raise ConfigError(f"dataset.overlap={self.overlap!r}: must be a fraction in [0, 1), e.g. 0.5")
        self.items()

    def items(self) -> list[Item]:
        if self._clips is None:
            self._clips = {}
            for split in sorted(self.splits):  # sorted: the manifest stores the config with sorted keys
                sequences = self._sequences(split)
                for duration in self.durations_ms:
                    for sequence, (events_root, images_root, timestamps) in sequences.items():
                        for clip in self._cut(split, duration, sequence, events_root, images_root, timestamps):
                            self._clips[_clip_id(clip)] = clip
        return [
            Item(id=item_id, sequence=f"{clip.split}/{duration_label(clip.duration_ms)}/{clip.sequence}",
                 weight=max(1, len(clip.frames)), group=f"{clip.split}/{duration_label(clip.duration_ms)}", index=i)
            for i, (item_id, clip) in enumerate(self._clips.items())
        ]

    def _sequences(self, split: str) -> dict[str, tuple[Path, Path, np.ndarray]]:
        """Sequence name -> (events root, images root, frame timestamps), sorted by name."""
        events_root, images_root = self._split_roots(split)
        names = sorted({p.name for root in (events_root, images_root) if root.is_dir()
                        for p in root.iterdir() if p.is_dir()})
        return {name: (events_root, images_root, _timestamps(images_root / name / TIMESTAMPS_FILE)) for name in names}

    def _cut(self, split: str, duration_ms: int, sequence: str, events_root: Path, images_root: Path,
             timestamps: np.ndarray) -> list[Clip]:
        length = duration_ms * 1000
        stride = max(1, round(length * (1 - self.overlap)))
        first, last = int(timestamps[0]), int(timestamps[-1])
        frames_dir = images_root / sequence / FRAMES_DIR
        clips = []
        for index, start in enumerate(range(first, last - length + 1, stride)):
            low, high = np.searchsorted(timestamps, [start, start + length], side="left")
            clips.append(Clip(
                split=split, duration_ms=duration_ms, sequence=sequence, index=index, start_us=start,
                end_us=start + length, events_file=events_root / sequence / EVENTS_FILE,
                frames=tuple(frames_dir / f"{i:06d}.png" for i in range(low, high)),
                frame_timestamps=tuple(int(t) for t in timestamps[low:high]),
            ))
        return clips

    def clip(self, item: Item) -> Clip:
        if self._clips is None:
            self.items()
        assert self._clips is not None
        return self._clips[item.id]

    def read(self, item: Item) -> ClipData:
        clip = self.clip(item)
        return ClipData(clip, find_window(clip.events_file, clip.start_us, clip.end_us))

    def fingerprint_files(self) -> list[Path]:
        """The frame timestamps decide every clip's span and frames."""
        files = []
        for split in sorted(self.splits):
            _, images_root = self._split_roots(split)
            files += [images_root / name / TIMESTAMPS_FILE for name in self._sequences(split)]
        return files


def _clip_id(clip: Clip) -> str:
    parts = (clip.split, duration_label(clip.duration_ms), clip.sequence)
    return ".".join(_UNSAFE.sub("-", part) for part in parts) + f".{clip.index:05d}"


def _timestamps(path: Path) -> np.ndarray:
    """A sequence's frame timestamps; clips cannot be laid without them, so a problem stops the launch."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: every DSEC sequence needs images/timestamps.txt (its clips are laid "
                          "on the frame timestamps); restore it or remove the sequence folder")
    try:
        timestamps = np.loadtxt(path, dtype=np.int64, ndmin=1, comments="#")
    except ValueError as error:
        raise ConfigError(f"{path}: not one integer µs timestamp per line ({error})") from None
    if timestamps.size == 0 or np.any(np.diff(timestamps) <= 0):
        raise ConfigError(f"{path}: timestamps must be non-empty and strictly increasing")
    return timestamps
