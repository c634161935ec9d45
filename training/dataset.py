"""The torch `Dataset` over a `Table`: one frame or one window per sample, for a DataLoader with workers.

A sample is a dict: every field of the table (windows: `(seq_len, ...)`), `valid` (per frame) and `row` (the
file's row of each frame, to write predictions back). `invalid="drop"` leaves out samples whose target frame
(any target frame for target=all) is invalid; `"mask"` keeps them and training code masks with `valid`.
MMPose itself drops windows whose 2D keypoints are all <= 0 and never reads `valid`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from shardprep.runtime.errors import ConfigError
from shardprep.training.table import Table
from shardprep.training.windows import Windows, positions

INVALID = ("mask", "drop")


def sample_windows(table: Table, windows: Windows | None, invalid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor, first, end) of every kept sample; frames are windows of one frame without a time axis."""
    if invalid not in INVALID:
        raise ConfigError(f"invalid={invalid!r}: use mask (keep, mask with `valid`) or drop")
    spec = windows or Windows(1)
    anchor, first, end = spec.anchors(table.video_starts, table.video_ends)
    if invalid == "drop":
        targets = positions(anchor, first, end, spec.offsets(), spec.step)[:, spec.target_index()]
        keep = table.valid[targets].reshape(len(anchor), -1).all(axis=1)
        anchor, first, end = anchor[keep], first[keep], end[keep]
    return anchor, first, end


class WindowDataset(Dataset):
    def __init__(self, table: Table, windows: Windows | None = None, invalid: str = "mask") -> None:
        self.table = table
        self.windows = windows
        self.anchor, self.first, self.end = sample_windows(table, windows, invalid)
        spec = windows or Windows(1)
        self.offsets, self.step = spec.offsets(), spec.step

    def __len__(self) -> int:
        return len(self.anchor)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        at = positions(self.anchor[index : index + 1], self.first[index : index + 1], self.end[index : index + 1],
                       self.offsets, self.step)[0]
        if self.windows is None:
            at = at[0]
        sample = {name: torch.from_numpy(np.ascontiguousarray(values[at])) for name, values in self.table.arrays.items()}
        sample["valid"] = torch.from_numpy(np.asarray(self.table.valid[at]))
        sample["row"] = torch.from_numpy(np.asarray(self.table.rows[at]))
        return sample
