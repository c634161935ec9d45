"""A merged split read for training: the chosen row arrays, in video order, with each row's video and validity.

Rows are regrouped by video (videos sorted by the adapter's parse of `imgname`, rows in file order inside a video,
as MMPose's lifting datasets group them), so a video is a run of consecutive positions and a window never crosses
one. `rows` keeps each position's row in the file. Transforms happen once, here, in float32 before any cast:
`S` root-relative (root from the file's `joint_names`, else `root_index`), pixel arrays normalised by the row's
image size as MMPose's lifting codecs do: (uv - [w/2, h/2]) / (w/2).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from shardprep.runtime.errors import ConfigError

# The XYCD inputs of a merged depth split: 2D keypoints (X, Y), their confidence (C), per-joint depth (D).
XYCD = ("predicted_keypoints", "predicted_keypoints_score", "predicted_depth_point")
ROOT_NAME = "root"  # MMPose's H36M joint name of the pelvis, written into merged files' `joint_names`


@dataclass
class Table:
    """Row arrays in video order. `video_starts/ends`: position range of each video; `valid` (N,) bool."""

    arrays: dict[str, np.ndarray]
    rows: np.ndarray
    valid: np.ndarray
    video_starts: np.ndarray
    video_ends: np.ndarray
    videos: list[str] = field(default_factory=list)  # a name per video, where the source names them

    def __len__(self) -> int:
        return len(self.rows)


def read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Every array of a merged NPZ or HDF5 (text as str), and the file's per-file values (joint names, ...)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"merged split not found: {path} (run launch/merge.py, or check the path)")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        rows = len(arrays["imgname"]) if "imgname" in arrays else None
        meta = {key: value.tolist() for key, value in arrays.items() if value.ndim == 0 or len(value) != rows}
        return {key: value for key, value in arrays.items() if key not in meta}, meta
    with h5py.File(path, "r") as handle:
        arrays = {key: (handle[key].asstr()[()] if handle[key].dtype.kind in "SO" else handle[key][()])
                  for key in handle if isinstance(handle[key], h5py.Dataset)}
        meta = {key: _attribute(value) for key, value in handle.attrs.items()}
    return {key: np.asarray(value) for key, value in arrays.items()}, meta


def _attribute(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        return json.loads(value)
    return value.tolist() if isinstance(value, np.ndarray) else value


def video_keys(imgnames: Sequence[str], pattern: re.Pattern[str] | None) -> list[tuple[str, ...]]:
    """Per row, its video: the adapter pattern's finest named groups except `frame` (H36M: subject, action,
    camera, MMPose's key), or without a pattern the folder holding the image."""
    if pattern is None:
        return [(posixpath.dirname(name),) for name in imgnames]
    keys = []
    for row, name in enumerate(imgnames):
        match = pattern.fullmatch(posixpath.basename(name))
        if match is None:
            raise ConfigError(f"row {row}: imgname {name!r} does not follow the adapter's naming {pattern.pattern!r}")
        spans = {group: match.span(group) for group in match.groupdict() if match.group(group) is not None}
        finest = [group for group, (lo, hi) in spans.items() if group != "frame" and not any(
            other != group and lo <= a and b <= hi and (a, b) != (lo, hi) for other, (a, b) in spans.items())]
        keys.append(tuple(match.group(group) for group in finest))
    return keys


def root_of(meta: Mapping[str, object], root_index: int | None) -> int:
    names = meta.get("joint_names")
    if names:
        names = list(names)
        if ROOT_NAME not in names:
            raise ConfigError(f"the file's joint_names {names} have no {ROOT_NAME!r}; pass root_index=")
        return names.index(ROOT_NAME)
    return 0 if root_index is None else root_index


def normalize_2d(uv: np.ndarray, image_size: np.ndarray) -> np.ndarray:
    """Pixels -> MMPose's lifting frame: (uv - [w/2, h/2]) / (w/2); `image_size` (..., 2) is (H, W)."""
    height, width = image_size[..., 0].astype(np.float32), image_size[..., 1].astype(np.float32)
    half = (width / 2)[..., None, None]
    return (uv - np.stack([width / 2, height / 2], axis=-1)[..., None, :]) / half


def unnormalize_2d(normalized: np.ndarray, image_size: np.ndarray) -> np.ndarray:
    height, width = image_size[..., 0].astype(np.float32), image_size[..., 1].astype(np.float32)
    return normalized * (width / 2)[..., None, None] + np.stack([width / 2, height / 2], axis=-1)[..., None, :]


def merged_split(path: str | Path, fields: Sequence[str] = (*XYCD, "S"), pattern: re.Pattern[str] | None = None,
                 root_relative: bool = True, root_index: int | None = None,
                 normalize: Sequence[str] = ()) -> Table:
    """Read a merged XYCD split (NPZ or HDF5). `pattern`: the adapter's imgname pattern (e.g.
    `datasets.h36m.H36MAnnotation.pattern`); `normalize`: pixel arrays to normalise by the row's `image_size`."""
    arrays, meta = read_arrays(Path(path))
    wanted = [*fields, *[name for name in normalize if name not in fields]]
    missing = [name for name in [*wanted, "imgname"] if name not in arrays]
    if missing:
        raise ConfigError(f"{path}: no array {missing[0]!r}; it has {', '.join(sorted(arrays))}")
    if normalize and "image_size" not in arrays:
        raise ConfigError(f"{path}: normalize={list(normalize)} needs the rows' image_size, which the file lacks")
    keys = video_keys(arrays["imgname"].tolist(), pattern)
    unique = sorted(set(keys))
    code = {key: i for i, key in enumerate(unique)}
    video = np.array([code[key] for key in keys], dtype=np.int64)
    order = np.argsort(video, kind="stable")
    counts = np.bincount(video, minlength=len(unique))
    ends = np.cumsum(counts)
    selected = {}
    for name in fields:
        values = arrays[name][order]
        if name in normalize:
            values = normalize_2d(values.astype(np.float32), arrays["image_size"][order])
        if name == "S" and root_relative:
            root = root_of(meta, root_index)
            values = values.astype(np.float32).copy()
            values[..., :3] -= values[..., root : root + 1, :3]
        selected[name] = values
    valid = arrays["valid"][order].astype(bool) if "valid" in arrays else np.ones(len(order), bool)
    return Table(selected, order.astype(np.int64), valid, ends - counts, ends, ["/".join(key) for key in unique])

