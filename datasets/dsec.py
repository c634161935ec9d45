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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.errors import ConfigError
from shardprep.stages.events.slicing import EventsFileError, EventWindow, find_window, open_events, stream_span, \
    window_in

EVENTS_FILE = Path("events/left/events.h5")
RECTIFY_FILE = Path("events/left/rectify_map.h5")
EMPTY_CLIPS = ("keep", "skip")
PARTIAL_CLIPS = ("keep", "skip", "flag")
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
    # The part [start, end) of the clip that the events file covers (absolute µs; start == end: none); None when the
    # file could not be read at enumeration (its clips then fail on their own when read).
    covered: tuple[int, int] | None = None
    rectify_file: Path | None = None  # the sequence's rectify_map.h5, when events are to be rectified

    @property
    def partial(self) -> bool:
        """Part of the clip lies outside the event stream (before `t_offset` or past the end of `ms_to_idx`)."""
        return self.covered is not None and self.covered != (self.start_us, self.end_us)


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
    for DSEC's download layout where `train_events/` and `train_images/` are separate folders.

    `empty_clips=skip` leaves out clips without events (the seed's builder does; EventGPT's renderer fails on them),
    `partial_clips=skip` those that the event stream covers only in part (DSEC's EventSlicer refuses them); `flag`
    keeps them and the merge records their covered span. Either setting reads each sequence's events file at
    enumeration (its table and about one millisecond of events per clip boundary)."""

    gives = frozenset({"clip"})

    def __init__(self, name: str, root: str, splits: Mapping[str, str | Mapping[str, str]],
                 durations_ms: list[int], overlap: float = 0.5, empty_clips: str = "keep",
                 partial_clips: str = "keep", rectify: bool = False) -> None:
        super().__init__(name)
        self.root = Path(root).expanduser()
        self.splits = dict(splits)
        self.durations_ms = list(durations_ms)
        self.overlap = overlap
        self.empty_clips, self.partial_clips, self.rectify = empty_clips, partial_clips, rectify
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
        if self.empty_clips not in EMPTY_CLIPS:
            raise ConfigError(f"dataset.empty_clips={self.empty_clips!r}: use one of {', '.join(EMPTY_CLIPS)}")
        if self.partial_clips not in PARTIAL_CLIPS:
            raise ConfigError(f"dataset.partial_clips={self.partial_clips!r}: use one of {', '.join(PARTIAL_CLIPS)}")
        if not isinstance(self.rectify, bool):
            raise ConfigError(f"dataset.rectify={self.rectify!r}: true or false")
        self.items()
        if self.rectify:
            missing = sorted({str(clip.rectify_file) for clip in self._clips.values()
                              if clip.rectify_file is not None and not clip.rectify_file.is_file()})
            if missing:
                raise ConfigError(f"dataset.rectify=true but {missing[0]} (and {len(missing) - 1} more) not found: "
                                  "download the sequences' rectify_map.h5 or set dataset.rectify=false")

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
        events_file = events_root / sequence / EVENTS_FILE
        clips = []
        for index, start in enumerate(range(first, last - length + 1, stride)):
            low, high = np.searchsorted(timestamps, [start, start + length], side="left")
            clips.append(Clip(
                split=split, duration_ms=duration_ms, sequence=sequence, index=index, start_us=start,
                end_us=start + length, events_file=events_file,
                frames=tuple(frames_dir / f"{i:06d}.png" for i in range(low, high)),
                frame_timestamps=tuple(int(t) for t in timestamps[low:high]),
                rectify_file=events_root / sequence / RECTIFY_FILE if self.rectify else None,
            ))
        if self.empty_clips == "keep" and self.partial_clips == "keep":
            return clips
        return self._select(clips, events_file)

    def _select(self, clips: list[Clip], events_file: Path) -> list[Clip]:
        """The clips with their covered span, less those that the empty/partial settings leave out. An unreadable
        events file keeps its clips: each then fails with the file's error when read."""
        try:
            h5 = open_events(events_file)
        except EventsFileError:
            return clips
        kept = []
        with h5:
            low, high = stream_span(h5)
            for clip in clips:
                covered = (min(max(clip.start_us, low), high), max(min(clip.end_us, high), low))
                clip = replace(clip, covered=covered)
                if self.partial_clips == "skip" and clip.partial:
                    continue
                if self.empty_clips == "skip" and window_in(h5, events_file, clip.start_us, clip.end_us).count == 0:
                    continue
                kept.append(clip)
        return kept

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
