"""MPI-INF-3DHP as released, converted to what MMPose's `tools/dataset_converters/preprocess_mpi_inf_3dhp.py` writes.

Raw layout (the converter's `data_root`):
- `train/S<s>/Seq<q>/annot.mat` (MATLAB v5: cells `annot2`, `annot3`, one per camera, (frames, 28 * 2 / 28 * 3)),
  `camera.calibration`, `imageSequence/video_<c>.avi`; one item per (subject, sequence, camera), all frames;
- `test/TS<s>/annot_data.mat` (MATLAB v7.3 = HDF5: `annot2`, `annot3` of 17 joints, `valid_frame`),
  `imageSequence/img_<i>.jpg`; one item per test subject, only frames with `valid_frame` = 1 (test_valid).
Rows: the 17 of 28 joints `JOINTS_17` (train; the test files hold those 17 already), 3D in m, visibility = the 2D
point inside 2048 x 2048 (the converter's rule, for train and test alike), `center`/`scale` from the 2D box.
`imgname` `S1_Seq1_Cam0_000001.jpg` / `TS1_000001.jpg` (1-based frame), every frame flat in `images/`.
Frame counts are the annotation's own (the converter hard-codes the full release's).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from shardprep.datasets.base import Item
from shardprep.datasets.raw_video import RawVideoDataset, VideoConversion, annotation_rows
from shardprep.runtime.errors import ConfigError

JOINTS_17 = [7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6]
RAW_JOINTS = 28
VISIBLE_SIZE = (2048, 2048)  # the converter's visibility box (its train image size), for both splits
TEST_SIZES = {1: (2048, 2048), 2: (2048, 2048), 3: (2048, 2048), 4: (2048, 2048), 5: (1920, 1080), 6: (1920, 1080)}
CALIBRATION_LINES = 7  # per camera in camera.calibration, after one header line


@dataclass(frozen=True)
class Sequence:
    split: str
    subject: str  # "S1" / "TS1"
    take: int = 0
    camera: int = 0

    @property
    def id(self) -> str:
        return f"{self.subject}_Seq{self.take}_Cam{self.camera}" if self.split == "train" else self.subject


class MPIINF3DHPRawDataset(RawVideoDataset):
    def __init__(self, name: str, root: str, subjects: dict[str, list[str]], sequences: list[int],
                 cameras: list[int]) -> None:
        super().__init__(name, root)
        self.subjects = subjects
        self.takes = sequences
        self.cameras = cameras
        self._frame_counts: dict[Path, int] = {}  # per sequence folder

    def validate(self) -> None:
        super().validate()
        bad = [s for s in self.subjects.get("train", []) if not re.fullmatch(r"S\d+", s)]
        bad += [s for s in self.subjects.get("test", []) if not re.fullmatch(r"TS\d+", s)]
        if bad or set(self.subjects) - {"train", "test"}:
            raise ConfigError(f"dataset.subjects: train takes S<n>, test TS<n> ({bad or sorted(self.subjects)} given)")

    @cached_property
    def sequences(self) -> dict[str, Sequence]:
        found = [Sequence("test", subject) for subject in self.subjects.get("test", [])]
        found += [Sequence("train", subject, take, camera) for subject in self.subjects.get("train", [])
                  for take in self.takes for camera in self.cameras]
        return {sequence.id: sequence for sequence in found}

    def _folder(self, sequence: Sequence) -> Path:
        if sequence.split == "test":
            return self.root / "test" / sequence.subject
        return self.root / "train" / sequence.subject / f"Seq{sequence.take}"

    def items(self) -> list[Item]:
        """Each weighs the frames it converts, so shards balance frames (3DHP's videos differ several-fold)."""
        return [Item(id=key, sequence=key, weight=self._frames(sequence), group=sequence.split, index=i)
                for i, (key, sequence) in enumerate(self.sequences.items())]

    def _frames(self, sequence: Sequence) -> int:
        """Train: the length of annot.mat's `frames` (read alone: the pose cells are skipped), once per sequence
        folder; test: the valid frames. 1 where the file cannot be read (the item then fails, naming it)."""
        folder = self._folder(sequence)
        if folder not in self._frame_counts:
            try:
                if sequence.split == "test":
                    with h5py.File(folder / "annot_data.mat", "r") as mat:
                        count = int(np.count_nonzero(np.array(mat["valid_frame"])))
                else:
                    count = len(scipy.io.loadmat(folder / "annot.mat", variable_names=["frames"])["frames"])
            except Exception:  # missing or corrupt: reported with its file when the item is read
                count = 1
            self._frame_counts[folder] = count
        return max(1, self._frame_counts[folder])

    def read(self, item: Item) -> VideoConversion:
        sequence = self.sequences[item.id]
        return self._test(sequence) if sequence.split == "test" else self._train(sequence)

    def _train(self, sequence: Sequence) -> VideoConversion:
        path = self._folder(sequence) / "annot.mat"
        try:
            annot = scipy.io.loadmat(path, variable_names=["annot2", "annot3"])
            points_2d = np.asarray(annot["annot2"][sequence.camera][0])
            points_3d = np.asarray(annot["annot3"][sequence.camera][0])
        except Exception as error:  # scipy raises ValueError, MatReadError, KeyError, IndexError... for a bad file
            raise ValueError(f"{path}: cannot read camera {sequence.camera} of annot2/annot3 "
                             f"({type(error).__name__}: {error})") from None
        frames = len(points_2d)
        if len(points_3d) != frames:
            raise ValueError(f"{path}: annot2 has {frames} frames for camera {sequence.camera}, annot3 {len(points_3d)}")
        part_xy = points_2d.reshape(frames, RAW_JOINTS, 2)[:, JOINTS_17]
        world = points_3d.reshape(frames, RAW_JOINTS, 3)[:, JOINTS_17]
        names = [f"{sequence.id}_{i + 1:06d}.jpg" for i in range(frames)]
        video = self._folder(sequence) / "imageSequence" / f"video_{sequence.camera}.avi"
        if not video.is_file():
            raise ValueError(f"{video}: video not found (its annot.mat exists)")
        return VideoConversion(names=names, video=video, annotation=rows(names, part_xy, world * 0.001))

    def _test(self, sequence: Sequence) -> VideoConversion:
        points_2d, points_3d, valid = self._test_annotation(sequence)
        frames = np.nonzero(valid)[0]
        names = [f"{sequence.subject}_{i + 1:06d}.jpg" for i in frames]
        images = [self._folder(sequence) / "imageSequence" / f"img_{i + 1:06d}.jpg" for i in frames]
        return VideoConversion(names=names, images=images,
                               annotation=rows(names, points_2d[frames], points_3d[frames] * 0.001))

    def _test_annotation(self, sequence: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        path = self._folder(sequence) / "annot_data.mat"
        try:
            with h5py.File(path, "r") as mat:
                points_2d = np.array(mat["annot2"]).reshape((-1, 17, 2))
                points_3d = np.array(mat["annot3"]).reshape((-1, 17, 3))
                valid = np.array(mat["valid_frame"]).reshape(-1)
        except Exception as error:  # h5py raises OSError, KeyError, ValueError... for a bad file
            raise ValueError(f"{path}: cannot read annot2/annot3/valid_frame as MATLAB v7.3 ({type(error).__name__}: "
                             f"{error})") from None
        if not len(points_2d) == len(points_3d) == len(valid):
            raise ValueError(f"{path}: annot2 has {len(points_2d)} frames, annot3 {len(points_3d)}, valid_frame "
                             f"{len(valid)}")
        return points_2d, points_3d, valid

    def annotation_file(self, split: str) -> str:
        return f"annotations/mpi_inf_3dhp_{'train' if split == 'train' else 'test_valid'}.npz"

    def frame_folder(self, item: Item) -> str:
        return "images"

    def extra_files(self) -> Mapping[str, Callable[[Path], None]]:
        files = {}
        for split in ("train", "test"):
            if self.subjects.get(split):
                files[f"annotations/cameras_{split}.pkl"] = self._camera_writer(split)
        return files

    def _camera_writer(self, split: str) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            cameras = self.train_cameras() if split == "train" else self.test_cameras()
            with open(path, "wb") as handle:
                pickle.dump(cameras, handle)

        return write

    def train_cameras(self) -> dict[str, dict[str, Any]]:
        """`S1_Seq1_Cam0` -> R (3,3), T (3,1) m, c (2,1), f (2,1), w, h, name, from each camera.calibration."""
        cameras = {}
        for subject in self.subjects["train"]:
            for take in self.takes:
                path = self._folder(Sequence("train", subject, take)) / "camera.calibration"
                lines = path.read_text().splitlines()
                for camera in self.cameras:
                    cameras[Sequence("train", subject, take, camera).id] = calibration(lines, camera, path)
        return cameras

    def test_cameras(self) -> dict[str, dict[str, Any]]:
        """`TS1` -> c, f estimated from the annotation (least squares of x * Z = f X + c Z over every frame), w, h."""
        cameras = {}
        for subject in self.subjects["test"]:
            points_2d, points_3d, _ = self._test_annotation(Sequence("test", subject))
            fx, cx = least_squares(points_3d[:, :, [0, 2]], points_2d[:, :, 0] * points_3d[:, :, 2])
            fy, cy = least_squares(points_3d[:, :, [1, 2]], points_2d[:, :, 1] * points_3d[:, :, 2])
            number = int(subject[2:])
            width, height = TEST_SIZES.get(number, (0, 0))
            cameras[subject] = {"c": np.array([[cx], [cy]]), "f": np.array([[fx], [fy]]), "w": width, "h": height,
                                "name": f"test_cam_{number}"}
        return cameras


def rows(names: list[str], part_xy: np.ndarray, world: np.ndarray) -> dict[str, np.ndarray]:
    """The converter's rows; a joint is visible (1.0, float32 as the converter makes it) inside 2048 x 2048."""
    inside = ((part_xy[:, :, 0] >= 0) * (part_xy[:, :, 0] < VISIBLE_SIZE[0]) * (part_xy[:, :, 1] >= 0)
              * (part_xy[:, :, 1] < VISIBLE_SIZE[1]))
    return annotation_rows(names, part_xy, world, np.array(inside, dtype=np.float32)[:, :, None])


def least_squares(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(design.reshape((-1, 2)), target.reshape(-1, 1), rcond=None)[0].flatten()


def calibration(lines: list[str], camera: int, path: Path) -> dict[str, Any]:
    """One camera of a 3DHP `camera.calibration`: a header line, then per camera 7 lines (name, sensor, size,
    animated, intrinsic 4x4, extrinsic 4x4 in mm, radial)."""
    try:
        block = lines[1 + camera * CALIBRATION_LINES: 1 + (camera + 1) * CALIBRATION_LINES]
        fields = {line.split()[0]: line.split()[1:] for line in block}
        intrinsic = [float(v) for v in fields["intrinsic"]]
        extrinsic = np.array([float(v) for v in fields["extrinsic"]]).reshape(4, 4)
        width, height = (int(v) for v in fields["size"])
    except (IndexError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: no readable calibration for camera {camera} ({type(error).__name__}: {error})") \
            from None
    return {"R": extrinsic[:3, :3], "T": extrinsic[:3, 3:] * 0.001, "c": np.array([[intrinsic[2]], [intrinsic[6]]]),
            "f": np.array([[intrinsic[0]], [intrinsic[5]]]), "w": width, "h": height, "name": f"train_cam_{camera}"}
