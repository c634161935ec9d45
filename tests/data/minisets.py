"""Synthetic mini-datasets in the four annotation formats (H36M, 3DHP, 3DPW, Fit3D), written into a temp folder.

Frames are scikit-image's astronaut photo shifted a few pixels per frame; the annotation is the demo's standing
H36M-17 skeleton projected with a pinhole, so every row's 2D/3D ground truth is known exactly. Each format gets its
own file names and folder layout, as its adapter expects them. A few frames each: tests stay fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from shardprep.datasets.demo import FOCAL, SKELETON
from shardprep.datasets.mpi_inf_3dhp import MPI_TO_H36M
from shardprep.runtime.npz import write_npz

DEPTH = 4.5
SHIFT_PX = 4
SIZE = 128  # frames are the photo downscaled: reading and hashing stay cheap


def _photo() -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((SIZE, SIZE)))


def _frame(photo: np.ndarray, frame: int) -> np.ndarray:
    return np.pad(photo, ((0, 0), (SHIFT_PX * frame, 0), (0, 0)), mode="edge")[:, :SIZE]


def _pose(frame: int, person: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Known 3D joints (17, 3) m and their projection (17, 2) px for a frame (and person: a sideways offset)."""
    joints = SKELETON + [SHIFT_PX * frame * DEPTH / FOCAL + 0.6 * person, 0.0, DEPTH]
    uv = joints[:, :2] / joints[:, 2:] * FOCAL / 8 + [SIZE / 2, SIZE * 0.6]
    return joints, uv


def _row(frame: int, person: int = 0) -> dict[str, np.ndarray]:
    joints, uv = _pose(frame, person)
    low, high = uv.min(axis=0), uv.max(axis=0)
    return {
        "center": (low + high) / 2,
        "scale": np.float64(1.2 * float(np.max(high - low)) / 200.0),
        "part": np.concatenate([uv, np.ones((17, 1))], axis=1),
        "S": np.concatenate([joints, np.ones((17, 1))], axis=1),
    }


def _write(root: Path, annotation: str, rows: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    arrays = {"imgname": np.array([name for name, _ in rows])}
    for key in rows[0][1]:
        arrays[key] = np.stack([row[key] for _, row in rows]).astype(np.float64)
    write_npz(root / annotation, arrays)


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, quality=95)


def make_h36m(root: Path, frames: int = 3) -> list[str]:
    photo = _photo()
    for split, subjects in {"train": ("S1", "S5"), "test": ("S9", "S11")}.items():
        rows = []
        for subject in subjects:
            folder = f"{subject}/{subject}_Walking_1.54138969"
            for frame in range(frames):
                name = f"{folder}/{subject}_Walking_1.54138969_{frame + 1:06d}.jpg"
                _save(root / "images" / name, _frame(photo, frame))
                rows.append((name, _row(frame)))
        _write(root, f"annotation_body3d/fps10/h36m_{split}.npz", rows)
    (root / "annotation_body3d/cameras.pkl").write_bytes(b"")  # only its presence is checked
    return ["dataset=h36m", f"dataset.root={root}"]


def make_3dhp(root: Path, frames: int = 3) -> list[str]:
    photo = _photo()
    splits = {"train": ["S1_Seq1_Cam0", "S2_Seq1_Cam0"], "test": ["TS1"]}
    for split, sequences in splits.items():
        rows = []
        for sequence in sequences:
            for frame in range(frames):
                name = f"{sequence}_{frame + 1:06d}.jpg"
                _save(root / "images" / name, _frame(photo, frame))
                row = _row(frame)
                for key in ("part", "S"):  # the file stores MPI order; the adapter turns it back into H36M order
                    mpi = np.zeros_like(row[key])
                    mpi[list(MPI_TO_H36M)] = row[key]
                    row[key] = mpi
                rows.append((name, row))
        _write(root, f"mpi_inf_3dhp_{'test_valid' if split == 'test' else split}.npz", rows)
    return ["dataset=3dhp", f"dataset.root={root}"]


def make_3dpw(root: Path, frames: int = 3) -> list[str]:
    photo = _photo()
    splits = {"train": ["courtyard_relaxOnBench_00"], "test": ["downtown_walkBridge_01"]}
    for split, sequences in splits.items():
        rows = []
        for sequence in sequences:
            for frame in range(frames):
                _save(root / f"imageFiles/{sequence}/image_{frame:05d}.jpg", _frame(photo, frame))
                for person in (0, 1):
                    rows.append((f"{sequence}_participant{person}_frame{frame:05d}.jpg", _row(frame, person)))
        _write(root, f"3dpw_{split}.npz", rows)
    return ["dataset=3dpw", f"dataset.root={root}"]


def make_fit3d(root: Path, frames: int = 3) -> list[str]:
    photo = _photo()
    rows = []
    for subject in ("s03", "s04", "s10", "s11"):
        video = f"{subject}_50591643-0_walk_the_box"
        for frame in range(frames):
            _save(root / f"images/{video}.mp4_{frame + 1:06d}.jpg", _frame(photo, frame))  # file index = frame + 1
            rows.append((f"{video}.mp4_{frame:06d}.jpg", _row(frame)))
    _write(root, "fit3d.npz", rows)
    return ["dataset=fit3d", f"dataset.root={root}"]


MAKERS = {"h36m": make_h36m, "3dhp": make_3dhp, "3dpw": make_3dpw, "fit3d": make_fit3d}
