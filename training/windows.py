"""Which rows make each sample: MMPose's lifting-dataset windows, as (anchor, video bounds) instead of index lists.

MMPose's `Human36mDataset.get_sequence_indices` cuts each video (sorted by key, rows in file order) into windows of
`seq_len` frames `step` apart. Without padding a window starts at every frame that leaves room for it; with
`pad_video_seq` every frame is a target and positions outside the video repeat the video's first or last frame.
Both are `clamp(anchor + step * offsets, first, last)`; storing the anchor and the video's bounds per window (three
integers) instead of its `seq_len` rows keeps 243-frame windows of a 1 M-frame split at 24 MB, and lets the GPU
loader build the rows of a batch on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardprep.runtime.errors import ConfigError

TARGETS = ("last", "middle", "all")


@dataclass(frozen=True)
class Windows:
    """`seq_len` frames `step` apart; `pad` (MMPose's `pad_video_seq`): one window per frame, padded at video ends;
    `target`: last (MMPose `causal=True`), middle (`causal=False`) or all (MotionBERT's `multiple_target`);
    `stride`: keep every stride-th window of a video (MMPose's `multiple_target_step` for unpadded windows)."""

    seq_len: int
    step: int = 1
    stride: int = 1
    pad: bool = False
    target: str = "last"

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.step < 1 or self.stride < 1:
            raise ConfigError(f"windows: seq_len={self.seq_len}, step={self.step}, stride={self.stride}: each must be >= 1")
        if self.target not in TARGETS:
            raise ConfigError(f"windows: target={self.target!r}: use one of {', '.join(TARGETS)}")
        if self.pad and self.target == "all":
            raise ConfigError("windows: pad=True needs one target frame per window (target=last or middle)")
        if self.pad and self.target == "middle" and self.seq_len % 2 == 0:
            raise ConfigError(f"windows: pad=True with target=middle needs an odd seq_len (got {self.seq_len}), as MMPose")

    def offsets(self) -> np.ndarray:
        """Frame offsets from the anchor, in units of `step`."""
        if not self.pad:
            return np.arange(self.seq_len)
        left = self.seq_len - 1 if self.target == "last" else (self.seq_len - 1) // 2
        return np.arange(-left, self.seq_len - left)

    def target_index(self) -> slice | int:
        """Which frames of a window are its targets."""
        if self.target == "all":
            return slice(None)
        return self.seq_len - 1 if self.target == "last" else self.seq_len // 2

    def anchors(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(anchor, first, end) per window for videos occupying positions [starts[v], ends[v])."""
        span = (self.seq_len - 1) * self.step + 1
        anchors, firsts, lasts = [], [], []
        for start, end in zip(starts.tolist(), ends.tolist()):
            stop = end if self.pad else end - span + 1
            here = np.arange(start, max(start, stop), self.stride, dtype=np.int64)
            anchors.append(here)
            firsts.append(np.full(len(here), start, np.int64))
            lasts.append(np.full(len(here), end, np.int64))
        return np.concatenate(anchors), np.concatenate(firsts), np.concatenate(lasts)


def positions(anchor: np.ndarray, first: np.ndarray, end: np.ndarray, offsets: np.ndarray, step: int) -> np.ndarray:
    """(W, T) positions of windows: anchor + step * offsets, clamped into the window's video (numpy or torch)."""
    raw = anchor[:, None] + step * offsets[None, :]
    return raw.clip(first[:, None], end[:, None] - 1)
