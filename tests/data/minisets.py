"""Synthetic mini-datasets in the four annotation formats (H36M, 3DHP, 3DPW, Fit3D), written into a temp folder.

Frames are scikit-image's astronaut photo shifted a few pixels per frame; the annotation is the demo's standing
H36M-17 skeleton projected with a pinhole, so every row's 2D/3D ground truth is known exactly. Files are laid out
and named as the tools that make them do, read from their sources, never from the adapters: MMPose's converters
(`tools/dataset_converters/preprocess_h36m.py`, `preprocess_mpi_inf_3dhp.py`: `np.savez`, their folders) and, for
3DPW and Fit3D (no MMPose converter), AugLift's scripts and the official releases. A few frames each: tests stay fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from shardprep.datasets.demo import FOCAL, SKELETON

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
    """As the converters save: `np.savez` of imgname, center, scale, part, S (float64)."""
    arrays = {"imgname": np.array([name for name, _ in rows])}
    for key in rows[0][1]:
        arrays[key] = np.stack([row[key] for _, row in rows]).astype(np.float64)
    (root / annotation).parent.mkdir(parents=True, exist_ok=True)
    np.savez(root / annotation, **arrays)


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, quality=95)


def make_h36m(root: Path, frames: int = 3) -> list[str]:
    """preprocess_h36m.py: annotation_body3d/fps10/h36m_{train,test}.npz, images/S1/S1_Walking_1.54138969/..."""
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


# The 28 joints of the raw 3DHP annotation (annot.mat), in the dataset's order.
MPI_RAW_JOINTS = (
    "spine3", "spine4", "spine2", "spine", "pelvis", "neck", "head", "head_top", "left_clavicle", "left_shoulder",
    "left_elbow", "left_wrist", "left_hand", "right_clavicle", "right_shoulder", "right_elbow", "right_wrist",
    "right_hand", "left_hip", "left_knee", "left_ankle", "left_foot", "left_toe", "right_hip", "right_knee",
    "right_ankle", "right_foot", "right_toe",
)
# The 17 raw joints preprocess_mpi_inf_3dhp.py keeps, in the order it writes them.
CONVERTER_KEPT = (7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6)
# Which raw 3DHP joint is each H36M-17 joint (MMPose h36m order), by body point.
H36M_AS_MPI_RAW = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "spine", "neck",
    "head", "head_top", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
)


def h36m_to_converter_order(h36m: np.ndarray) -> np.ndarray:
    """An (17, C) H36M-order array as the 3DHP converter's file holds it: placed in the raw 28, then its 17 kept."""
    raw = np.zeros((len(MPI_RAW_JOINTS), h36m.shape[1]))
    raw[[MPI_RAW_JOINTS.index(name) for name in H36M_AS_MPI_RAW]] = h36m
    return raw[list(CONVERTER_KEPT)]


def make_3dhp(root: Path, frames: int = 3) -> list[str]:
    """preprocess_mpi_inf_3dhp.py: annotations/mpi_inf_3dhp_{train,test_valid}.npz, frames flat in images/."""
    photo = _photo()
    splits = {"train": ["S1_Seq1_Cam0", "S2_Seq1_Cam0"], "test": ["TS1"]}
    for split, sequences in splits.items():
        rows = []
        for sequence in sequences:
            for frame in range(frames):
                number = frame + 1 if split == "train" else 2 * frame + 1  # test: only valid frames, with gaps
                name = f"{sequence}_{number:06d}.jpg"
                _save(root / "images" / name, _frame(photo, frame))
                row = _row(frame)
                row["part"], row["S"] = h36m_to_converter_order(row["part"]), h36m_to_converter_order(row["S"])
                rows.append((name, row))
        _write(root, f"annotations/mpi_inf_3dhp_{'test_valid' if split == 'test' else split}.npz", rows)
    return ["dataset=3dhp", f"dataset.root={root}"]


PW3D_FRAMES = {
    "official": "imageFiles/{sequence}/image_{frame:05d}.jpg",                # the 3DPW release
    "auglift": "imageFiles/{sequence}/{sequence}_image_{frame:05d}.jpg",     # AugLift's copies
}


def make_3dpw(root: Path, frames: int = 3, layout: str = "official") -> list[str]:
    """AugLift's annotation rows (one per person) over the frames of the official release or of AugLift's copies."""
    photo = _photo()
    splits = {"train": ["courtyard_relaxOnBench_00"], "test": ["downtown_walkBridge_01"]}
    for split, sequences in splits.items():
        rows = []
        for sequence in sequences:
            for frame in range(frames):
                _save(root / PW3D_FRAMES[layout].format(sequence=sequence, frame=frame), _frame(photo, frame))
                for person in (0, 1):
                    rows.append((f"{sequence}_participant{person}_frame{frame:05d}.jpg", _row(frame, person)))
        _write(root, f"3dpw_{split}.npz", rows)
    return ["dataset=3dpw", f"dataset.root={root}"]


# Fit3D frame files: AugLift's extraction drops the camera's -0 and numbers files frame + 1; its later copies also
# drop `.mp4`; `minus0` keeps the imgname's camera as it is.
FIT3D_FRAMES = {
    "auglift": ("images/{subject}_{camera}_{action}.mp4_{number:06d}.jpg", 1),
    "auglift_no_mp4": ("images/{subject}_{camera}_{action}_{number:06d}.jpg", 1),
    "auglift_exact": ("images/{subject}_{camera}_{action}.mp4_{number:06d}.jpg", 0),
    "minus0": ("images/{subject}_{camera}-0_{action}.mp4_{number:06d}.jpg", 1),
}


def make_fit3d(root: Path, frames: int = 3, layout: str = "auglift") -> list[str]:
    """AugLift's annotation (imgname with the camera's -0) over frames named as one of its scripts names them."""
    photo = _photo()
    pattern, offset = FIT3D_FRAMES[layout]
    rows = []
    for subject in ("s03", "s04", "s10", "s11"):
        for frame in range(frames):
            fields = {"subject": subject, "camera": "50591643", "action": "walk_the_box", "number": frame + offset}
            _save(root / pattern.format(**fields), _frame(photo, frame))
            rows.append((f"{subject}_50591643-0_walk_the_box.mp4_{frame:06d}.jpg", _row(frame)))
    _write(root, "fit3d.npz", rows)
    return ["dataset=fit3d", f"dataset.root={root}"]


MAKERS = {"h36m": make_h36m, "3dhp": make_3dhp, "3dpw": make_3dpw, "fit3d": make_fit3d}
