"""Fit3D as released, in the layout of its official toolkit (imar_vision_datasets_tools), converted to the annotation
file the Fit3D adapter (datasets/fit3d.py) reads by default.

Raw layout (the toolkit's `read_data`): `<subset>/<sNN>/videos/<camera>/<action>.mp4`,
`<subset>/<sNN>/camera_parameters/<camera>/<action>.json` (`extrinsics` R, T; `intrinsics_w_distortion` f, c, k, p;
`intrinsics_wo_distortion` f, c) and `<subset>/<sNN>/joints3d_25/<action>.json` (`joints3d_25`: frames x 25 x 3,
world frame). One item per (subject, camera, action) video. As the toolkit does: world to camera
`X_c = (X_w - T) R^T`, pixels by its `project_3d_to_2d` (with distortion by default), the video read only for the
joints' frames (a longer video is cut, a shorter one is an error). The first 17 of the 25 joints are H36M's.

Rows every `sample_rate`-th frame from 0, `imgname = <sNN>_<camera>-0_<action>.mp4_<frame:06d>.jpg` (AugLift's
naming, 0-based frame of the video); the frame file is `images/<sNN>_<camera>_<action>.mp4_<frame + 1:06d>.jpg`
(AugLift's extracted frames, the adapter's layout `auglift`). `S` = camera-frame joints, every joint visible,
`center`/`scale` from the 2D box as for H36M. All subjects go into one file, `fit3d.npz` (`launch/split.py` cuts it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from shardprep.datasets.base import Item
from shardprep.datasets.raw_video import RawVideoDataset, VideoConversion, annotation_rows
from shardprep.runtime.errors import ConfigError

RAW_JOINTS = 25
H36M_JOINTS = 17
INTRINSICS = ("w_distortion", "wo_distortion")
GROUP = "all"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Video:
    subject: str
    camera: str
    action: str

    @property
    def id(self) -> str:
        return _UNSAFE.sub("+", f"{self.subject}_{self.camera}_{self.action}")


class Fit3DRawDataset(RawVideoDataset):
    def __init__(self, name: str, root: str, subjects: list[str], cameras: list[str], subset: str = "train",
                 sample_rate: int = 1, intrinsics: str = "w_distortion") -> None:
        super().__init__(name, root)
        self.subjects = [str(subject) for subject in subjects]
        self.cameras = [str(camera) for camera in cameras]
        self.subset = subset
        self.sample_rate = sample_rate
        self.intrinsics = intrinsics

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.sample_rate, int) or isinstance(self.sample_rate, bool) or self.sample_rate < 1:
            raise ConfigError(f"dataset.sample_rate={self.sample_rate!r}: a whole number >= 1 (1: every frame)")
        if self.intrinsics not in INTRINSICS:
            raise ConfigError(f"dataset.intrinsics={self.intrinsics!r}: one of {', '.join(INTRINSICS)} (the "
                              "toolkit's camera models)")
        for subject in self.subjects:
            if not self._joints_folder(subject).is_dir():
                raise ConfigError(f"dataset.subjects names {subject}, but {self._joints_folder(subject)} does not "
                                  f"exist (raw_root holds {self.subset}/<sNN>/joints3d_25/ in the toolkit's layout)")

    def _subject_folder(self, subject: str) -> Path:
        return self.root / self.subset / subject

    def _joints_folder(self, subject: str) -> Path:
        return self._subject_folder(subject) / "joints3d_25"

    @cached_property
    def videos(self) -> dict[str, Video]:
        videos = {}
        for subject in self.subjects:
            actions = sorted(path.stem for path in self._joints_folder(subject).glob("*.json"))
            for camera in self.cameras:
                for action in actions:
                    video = Video(subject, camera, action)
                    videos[video.id] = video
        return videos

    def items(self) -> list[Item]:
        return [Item(id=key, sequence=key, weight=1, group=GROUP, index=i)
                for i, key in enumerate(self.videos)]

    def read(self, item: Item) -> VideoConversion:
        video = self.videos[item.id]
        folder = self._subject_folder(video.subject)
        world = read_joints(folder / "joints3d_25" / f"{video.action}.json")[:, :H36M_JOINTS]
        camera = read_camera(folder / "camera_parameters" / video.camera / f"{video.action}.json", self.intrinsics)
        source = folder / "videos" / video.camera / f"{video.action}.mp4"
        if not source.is_file():
            raise ValueError(f"{source}: video not found (its joints3d_25 file exists)")
        frames = range(0, len(world), self.sample_rate)
        points = to_camera(world[::self.sample_rate], camera["extrinsics"])
        part_xy = project(points, camera["intrinsics"])
        imgnames = [f"{video.subject}_{video.camera}-0_{video.action}.mp4_{frame:06d}.jpg" for frame in frames]
        names = [f"{video.subject}_{video.camera}_{video.action}.mp4_{frame + 1:06d}.jpg" for frame in frames]
        visible = np.ones((len(names), H36M_JOINTS, 1))
        return VideoConversion(names=names, video=source, step=self.sample_rate,
                               annotation=annotation_rows(imgnames, part_xy, points, visible))

    def annotation_file(self, split: str) -> str:
        return "fit3d.npz"

    def frame_folder(self, item: Item) -> str:
        return "images"


def read_joints(path: Path) -> np.ndarray:
    """`joints3d_25` of a toolkit joints file as (frames, 25, 3)."""
    try:
        with open(path) as handle:
            joints = np.asarray(json.load(handle)["joints3d_25"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as error:  # missing, not JSON, no key, ragged lists
        raise ValueError(f"{path}: cannot read its joints3d_25 ({type(error).__name__}: {error})") from None
    if joints.ndim != 3 or joints.shape[1:] != (RAW_JOINTS, 3):
        raise ValueError(f"{path}: joints3d_25 has shape {joints.shape}, expected (frames, 25, 3)")
    return joints


def read_camera(path: Path, intrinsics: str) -> dict[str, dict[str, np.ndarray]]:
    """The extrinsics (R (3, 3), T (3,)) and the chosen intrinsics (f, c (2,); k (3,), p (2,) with distortion) of a
    toolkit camera file."""
    if not path.is_file():
        raise ValueError(f"{path}: camera parameters not found (the video's camera_parameters JSON)")
    wanted = {"R": (3, 3), "T": (3,), "f": (2,), "c": (2,)}
    if intrinsics == "w_distortion":
        wanted |= {"k": (3,), "p": (2,)}
    try:
        with open(path) as handle:
            content: Any = json.load(handle)
        groups = {"extrinsics": content["extrinsics"], "intrinsics": content[f"intrinsics_{intrinsics}"]}
        arrays = {key: np.asarray(group[key], dtype=np.float64) for group in groups.values() for key in group
                  if key in wanted}
        for key, shape in wanted.items():
            arrays[key] = arrays[key].reshape(shape)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: no readable extrinsics / intrinsics_{intrinsics} ({type(error).__name__}: "
                         f"{error})") from None
    return {"extrinsics": {key: arrays[key] for key in ("R", "T")},
            "intrinsics": {key: arrays[key] for key in wanted if key not in ("R", "T")}}


def to_camera(world: np.ndarray, extrinsics: dict[str, np.ndarray]) -> np.ndarray:
    """The toolkit's world to camera: (X - T) R^T."""
    return (world - extrinsics["T"]) @ extrinsics["R"].T


def project(points: np.ndarray, intrinsics: dict[str, np.ndarray]) -> np.ndarray:
    """The toolkit's `project_3d_to_2d`: normalised x = X/Z, with distortion radial 1 + k1 r2 + k2 r4 + k3 r6 and
    its tangential terms (note its p order: p2 goes with x, p1 with y), then f x + c."""
    normal = points[..., :2] / points[..., 2:]
    if "k" in intrinsics:
        k, (p1, p2) = intrinsics["k"], intrinsics["p"]
        r2 = np.sum(normal ** 2, axis=-1, keepdims=True)
        radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
        tangential = normal[..., :1] * p2 + normal[..., 1:] * p1
        normal = normal * (radial + tangential) + r2 * np.array([p2, p1])
    return intrinsics["f"] * normal + intrinsics["c"]
