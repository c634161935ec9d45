"""A tiny MPI-INF-3DHP in the release's raw layout, written the way the release is, for the convert stage's tests.

- `train/S1/Seq1/annot.mat`: MATLAB v5 (scipy.io.savemat) with the release's variables `annot2`, `annot3`,
  `univ_annot3` (cells of 14 cameras x 1, each (frames, 28 * 2 / 28 * 3)), `frames`, `cameras`;
  `camera.calibration` in the release's text form (a header line, 7 lines per camera: name, sensor, size,
  animated, intrinsic 4x4, extrinsic 4x4 mm, radial); `imageSequence/video_<c>.avi` (MPEG-4 from imageio-ffmpeg's
  ffmpeg), frame i one grey level (`raw_h36m.grey(i)`).
- `test/TS<n>/annot_data.mat`: MATLAB v7.3, an HDF5 file behind MATLAB's 512-byte header, `annot2` (frames, 1, 17, 2),
  `annot3` (frames, 1, 17, 3) and `valid_frame` (frames, 1) as MATLAB stores a 2x17x1xN / 1xN array (dimensions
  reversed); `imageSequence/img_<i>.jpg`.
Some 2D points fall outside 2048 x 2048 (invisible joints). Seeded: the same call writes the same annotations.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

from data.raw_h36m import HEIGHT, WIDTH, grey

CAMERAS = 14
CONVERTED_CAMERAS = [0, 1, 2, 4, 5, 6, 7, 8]
MATLAB_73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Dec  3 12:00:00 2026 HDF5 schema 1.00 ."


def points_2d(rng: np.random.Generator, frames: int, joints: int) -> np.ndarray:
    points = rng.uniform(-100, 2148, (frames, joints, 2))
    return points


def calibration_text(rng: np.random.Generator) -> str:
    lines = ["Skeletool Camera Calibration File V1.0"]
    for camera in range(CAMERAS):
        fx, fy, cx, cy = rng.uniform(1400, 1500), rng.uniform(1400, 1500), rng.uniform(1000, 1050), rng.uniform(1000, 1050)
        intrinsic = [fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0, 0, 0, 0, 1]
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        extrinsic = np.eye(4)
        extrinsic[:3, :3], extrinsic[:3, 3] = rotation, rng.uniform(-3000, 3000, 3)
        lines += [f"name          {camera}", "  sensor      10 10", "  size        2048 2048", "  animated    0",
                  "  intrinsic   " + " ".join(f"{v:.6g}" for v in intrinsic) + " ",
                  "  extrinsic   " + " ".join(f"{v:.9g}" for v in extrinsic.reshape(-1)) + " ",
                  "  radial      0"]
    return "\n".join(lines) + "\n"


def write_avi(path: Path, frames: int) -> None:
    import imageio_ffmpeg

    pixels = np.concatenate([np.full((HEIGHT, WIDTH, 3), grey(i), np.uint8)[None] for i in range(frames)])
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", "25", "-i", "-", "-c:v", "mpeg4",
                    "-q:v", "2", str(path)], input=pixels.tobytes(), check=True, capture_output=True)


def write_v73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with h5py.File(path, "w", userblock_size=512) as mat:
        for key, value in arrays.items():
            mat.create_dataset(key, data=value)
    with open(path, "r+b") as handle:
        handle.write(MATLAB_73_HEADER.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


def write_raw_3dhp(root: Path, train_frames: int = 4, test_frames: int = 6, seed: int = 0,
                   train: tuple[str, int] = ("S1", 1), test: tuple[str, ...] = ("TS1", "TS5")) -> Path:
    rng = np.random.default_rng(seed)
    subject, take = train
    folder = root / "train" / subject / f"Seq{take}"
    (folder / "imageSequence").mkdir(parents=True, exist_ok=True)

    def cells(dims: int) -> np.ndarray:
        cell = np.empty((CAMERAS, 1), dtype=object)
        for camera in range(CAMERAS):
            values = points_2d(rng, train_frames, 28) if dims == 2 else rng.uniform(-900, 900, (train_frames, 28, 3)) + [0, 0, 4000]
            cell[camera, 0] = values.reshape(train_frames, 28 * dims)
        return cell

    scipy.io.savemat(folder / "annot.mat", {"annot2": cells(2), "annot3": cells(3), "univ_annot3": cells(3),
                                            "frames": np.arange(train_frames, dtype=np.float64)[:, None],
                                            "cameras": np.arange(CAMERAS, dtype=np.float64)[None]})
    (folder / "camera.calibration").write_text(calibration_text(rng))
    for camera in CONVERTED_CAMERAS:
        write_avi(folder / "imageSequence" / f"video_{camera}.avi", train_frames)
    for name in test:
        folder = root / "test" / name
        (folder / "imageSequence").mkdir(parents=True, exist_ok=True)
        valid = np.ones(test_frames)
        valid[[1, test_frames - 2]] = 0  # the release's gaps: some frames are not valid
        world = rng.uniform(-900, 900, (test_frames, 1, 17, 3)) + [0, 0, 4000]
        write_v73(folder / "annot_data.mat", {"annot2": points_2d(rng, test_frames, 17)[:, None],
                                              "annot3": world, "valid_frame": valid[:, None]})
        for i in range(test_frames):
            Image.new("RGB", (WIDTH, HEIGHT), (grey(i),) * 3).save(folder / "imageSequence" / f"img_{i + 1:06d}.jpg")
    return root
