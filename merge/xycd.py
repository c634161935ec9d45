"""The XYCD training files: a plain-array NPZ per split and, for MMPose's detection mode, its `_dets.npy` twin.

`<stem>.npz` is the annotation file with the merged arrays added (MMPose's `Human36mDataset` ignores keys it does
not know); `<stem>_dets.npy` is (N, 17, 3) float32 [x, y, score], row-aligned, for its `keypoint_2d_det_file` with
`keypoint_2d_src='detection'`. Both are written by `write_npz`/`write_with` (fixed timestamps, sorted keys, temp name
then rename), so equal arrays give equal bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from shardprep.runtime.atomic import write_with
from shardprep.runtime.npz import write_npz


def write(out_dir: Path, stem: str, arrays: Mapping[str, np.ndarray], dets: Mapping[str, str] | None) -> list[Path]:
    """Write `<stem>.npz` and, when `dets` names the merged keypoint and score arrays, `<stem>_dets.npy`."""
    path = out_dir / f"{stem}.npz"
    write_npz(path, arrays)
    if not dets:
        return [path]
    detections = det_array(arrays[dets["keypoints"]], arrays[dets["scores"]])
    dets_path = out_dir / f"{stem}_dets.npy"
    write_npy(dets_path, detections)
    return [path, dets_path]


def det_array(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N, K, 2) px and (N, K) scores -> (N, K, 3) float32 [x, y, score]."""
    return np.concatenate([keypoints, scores[..., None]], axis=-1).astype(np.float32)


def write_npy(path: Path, array: np.ndarray) -> None:
    """Atomically write a plain `.npy` (its header holds no date: equal arrays, equal bytes)."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle, so numpy does not append `.npy` to the temporary name
            np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)

    write_with(path, save)
