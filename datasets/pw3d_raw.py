"""3DPW as released, converted to the annotation files the 3DPW adapter (datasets/pw3d.py) reads by default.

Raw layout: `sequenceFiles/{train,validation,test}/<sequence>.pkl` (Python-2 pickles, read only through the
restricted unpickler of datasets/safe_pickle.py) and `imageFiles/<sequence>/image_<NNNNN>.jpg`. One item per
sequence: both actors of a frame share its image, so a sequence is never split between shards.

Per actor K and image frame i where `campose_valid[K][i]` is set (the release's flag that the camera pose is
aligned to the image), one row `imgname = <sequence>_participant<K>_frame<iiiii>.jpg` (AugLift's naming); rows are
actor by actor, frames in order. The release gives 24 SMPL joints per frame (`jointPositions`, world frame, m);
the H36M-17 joints are `joint_regressor @ joints` with a (17, 24) matrix the user supplies (AugLift's own rule is
not public, see docs/convert.md). World to camera with the frame's `cam_poses` (X_c = R X_w + t), pixels with
`cam_intrinsics` (no distortion in the release). `S` = camera-frame joints in m, `part` = their projection, every
joint visible; `center`/`scale` from the 2D box as for H36M. Frames are copied, only those some row names.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

from shardprep.datasets.base import Item
from shardprep.datasets.raw_video import RawVideoDataset, VideoConversion, annotation_rows
from shardprep.datasets.safe_pickle import load_arrays_pickle
from shardprep.runtime.errors import ConfigError

SMPL_JOINTS = 24
H36M_JOINTS = 17
SEQUENCES = "sequenceFiles"
IMAGES = "imageFiles"
REGRESSOR_HELP = ("a .npy (17, 24) float matrix mapping the 24 SMPL joints of the release's jointPositions to the "
                  "H36M-17 joints (AugLift's own rule is not public; docs/convert.md, section 3DPW)")


class PW3DRawDataset(RawVideoDataset):
    def __init__(self, name: str, root: str, splits: dict[str, list[str]], joint_regressor: str | None = None) -> None:
        super().__init__(name, root)
        self.splits = splits
        self.joint_regressor = joint_regressor

    @property
    def regressor_path(self) -> Path | None:
        return None if self.joint_regressor is None else self.root / Path(self.joint_regressor).expanduser()

    def validate(self) -> None:
        super().validate()
        for split, releases in self.splits.items():
            for release in releases:
                if not (self.root / SEQUENCES / release).is_dir():
                    raise ConfigError(f"dataset.splits.{split} names {release}, but {self.root / SEQUENCES / release} "
                                      "does not exist (the release has train, validation, test)")
        self.regressor  # noqa: B018  (loads and checks it)
        seen: dict[str, str] = {}
        for item in self.items():
            if item.id in seen:
                raise ConfigError(f"sequence {item.id} is in dataset.splits {seen[item.id]} and {item.group}")
            seen[item.id] = item.group

    @cached_property
    def regressor(self) -> np.ndarray:
        path = self.regressor_path
        if path is None:
            raise ConfigError(f"dataset.joint_regressor is not set: give {REGRESSOR_HELP} (path under raw_root or "
                              "absolute)")
        try:
            matrix = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ConfigError(f"dataset.joint_regressor={path}: cannot read it ({error}); give {REGRESSOR_HELP}") \
                from None
        if matrix.shape != (H36M_JOINTS, SMPL_JOINTS) or matrix.dtype.kind != "f" or not np.isfinite(matrix).all():
            raise ConfigError(f"dataset.joint_regressor={path} holds {matrix.dtype} {matrix.shape}; give "
                              f"{REGRESSOR_HELP}")
        return matrix.astype(np.float64)

    @cached_property
    def sequences(self) -> dict[str, Path]:
        return {item.id: self.root / SEQUENCES / release / f"{item.id}.pkl"
                for item, release in self._enumerated()}

    def _enumerated(self) -> list[tuple[Item, str]]:
        found = []
        for split in sorted(self.splits):
            for release in self.splits[split]:
                for name in sorted(os.listdir(self.root / SEQUENCES / release)):
                    if name.endswith(".pkl"):
                        sequence = name[: -len(".pkl")]
                        found.append((Item(id=sequence, sequence=sequence, weight=self._images(sequence),
                                           group=split, index=len(found)), release))
        return found

    def _images(self, sequence: str) -> int:
        """The sequence's image count (one listing), the frames its item copies at most."""
        try:
            return max(1, len(os.listdir(self.root / IMAGES / sequence)))
        except OSError:
            return 1  # reported with its path when the item is read

    def items(self) -> list[Item]:
        return [item for item, _ in self._enumerated()]

    def read(self, item: Item) -> VideoConversion:
        path = self.sequences[item.id]
        release = load_arrays_pickle(path)
        joints, cam_poses, intrinsics, valid = sequence_arrays(release, path)
        names: list[str] = []
        parts, cameras = [], []
        for person, (positions, flags) in enumerate(zip(joints, valid)):
            frames = np.flatnonzero(flags)
            world = np.einsum("jk,nkc->njc", self.regressor, positions[frames])
            camera = to_camera(world, cam_poses[frames])
            parts.append(project(camera, intrinsics))
            cameras.append(camera)
            names += [f"{item.id}_participant{person}_frame{frame:05d}.jpg" for frame in frames]
        part_xy = np.concatenate(parts) if parts else np.zeros((0, H36M_JOINTS, 2))
        camera_points = np.concatenate(cameras) if cameras else np.zeros((0, H36M_JOINTS, 3))
        visible = np.ones((len(names), H36M_JOINTS, 1))
        shown = sorted({int(frame) for flags in valid for frame in np.flatnonzero(flags)})
        images = [self.root / IMAGES / item.id / f"image_{frame:05d}.jpg" for frame in shown]
        return VideoConversion(names=[image.name for image in images], images=images, shared_frames=True,
                               annotation=annotation_rows(names, part_xy, camera_points, visible))

    def annotation_file(self, split: str) -> str:
        return f"3dpw_{split}.npz"

    def frame_folder(self, item: Item) -> str:
        return f"{IMAGES}/{item.id}"

    def fingerprint_files(self) -> list[Path]:
        return [self.regressor_path] if self.regressor_path is not None else []


def sequence_arrays(release: object, path: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[np.ndarray]]:
    """jointPositions per actor (frames, 24, 3), cam_poses (frames, 4, 4), cam_intrinsics (3, 3), campose_valid per
    actor (frames,) bool; a ValueError naming the file and the field where the release's shapes do not hold."""
    if not isinstance(release, dict):
        raise ValueError(f"{path}: holds a {type(release).__name__}, not the release's dict of fields")
    missing = [key for key in ("jointPositions", "cam_poses", "cam_intrinsics", "campose_valid") if key not in release]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} (is this a 3DPW sequence file?)")
    try:
        cam_poses = np.asarray(release["cam_poses"], dtype=np.float64)
        intrinsics = np.asarray(release["cam_intrinsics"], dtype=np.float64)
        positions = [np.asarray(actor, dtype=np.float64) for actor in release["jointPositions"]]
        valid = [np.asarray(actor).astype(bool).reshape(-1) for actor in release["campose_valid"]]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: a field is not numeric ({error})") from None
    frames = len(cam_poses)
    if cam_poses.shape != (frames, 4, 4) or intrinsics.shape != (3, 3):
        raise ValueError(f"{path}: cam_poses {cam_poses.shape} / cam_intrinsics {intrinsics.shape}, expected "
                         "(frames, 4, 4) / (3, 3)")
    if len(valid) != len(positions):
        raise ValueError(f"{path}: {len(positions)} actors in jointPositions, {len(valid)} in campose_valid")
    joints = []
    for person, (actor, flags) in enumerate(zip(positions, valid)):
        if actor.shape != (frames, SMPL_JOINTS * 3) or flags.shape != (frames,):
            raise ValueError(f"{path}: actor {person} has jointPositions {actor.shape} and campose_valid "
                             f"{flags.shape} for {frames} camera poses, expected ({frames}, 72) and ({frames},)")
        joints.append(actor.reshape(frames, SMPL_JOINTS, 3))
    return joints, cam_poses, intrinsics, valid


def to_camera(world: np.ndarray, cam_poses: np.ndarray) -> np.ndarray:
    """(frames, J, 3) world points in each frame's camera: R X + t from the 4 x 4 world-to-camera pose."""
    return np.einsum("nij,nkj->nki", cam_poses[:, :3, :3], world) + cam_poses[:, None, :3, 3]


def project(camera: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pinhole pixels of camera-frame points: K X / Z."""
    image = np.einsum("ij,nkj->nki", intrinsics, camera)
    return image[..., :2] / image[..., 2:]
