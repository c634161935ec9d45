"""The built-in demo: H36M-format frames made from scikit-image's astronaut photo, so every command runs anywhere.

Each sequence is one synthetic camera; its frames slide the photo sideways a few pixels per frame, and the synthetic
H36M-17 pose (a standing skeleton 4.5 m from the camera, projected with a pinhole) moves with it. The files are
generated once under `root` and are the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from shardprep.datasets.mmpose_npz import MMPoseDataset
from shardprep.runtime.atomic import create_folder_once
from shardprep.runtime.npz import write_npz

ANNOTATION = "annotation_body3d/fps50/h36m_demo.npz"
CAMERAS = ("55011271", "60457274")
FOCAL = 1000.0
SHIFT_PX = 4

# A standing person in H36M-17 order, metres, camera frame (x right, y down, z forward); pelvis at the origin.
SKELETON = np.array(
    [
        [0.00, 0.00, 0.0], [-0.13, 0.00, 0.0], [-0.15, 0.45, 0.0], [-0.16, 0.88, 0.05],
        [0.13, 0.00, 0.0], [0.15, 0.45, 0.0], [0.16, 0.88, 0.05], [0.00, -0.23, 0.0],
        [0.00, -0.48, 0.0], [0.00, -0.58, -0.05], [0.00, -0.70, 0.0], [0.17, -0.45, 0.0],
        [0.25, -0.20, 0.0], [0.28, 0.05, -0.05], [-0.17, -0.45, 0.0], [-0.25, -0.20, 0.0],
        [-0.28, 0.05, -0.05],
    ]
)


class DemoDataset(MMPoseDataset):
    def __init__(self, name: str, root: str, sequences: int = 2, frames_per_sequence: int = 6) -> None:
        # One folder per size, so a demo of another size never reuses the files of this one.
        root_path = Path(root).expanduser() / f"{sequences}x{frames_per_sequence}"
        super().__init__(name, annotation=str(root_path / ANNOTATION), image_root=str(root_path / "images"))
        self.root = root_path
        self.sequences = sequences
        self.frames_per_sequence = frames_per_sequence

    def validate(self) -> None:
        if not self.annotation.exists():
            generate(self.root, self.sequences, self.frames_per_sequence)
        super().validate()

    def items(self):
        if not self.annotation.exists():
            generate(self.root, self.sequences, self.frames_per_sequence)
        return super().items()


def generate(root: Path, sequences: int, frames_per_sequence: int) -> None:
    """Write the demo dataset under `root`, atomically: a half-written demo never appears there."""
    create_folder_once(root, lambda tmp: _write_demo(tmp, sequences, frames_per_sequence))


def _write_demo(tmp: Path, sequences: int, frames_per_sequence: int) -> None:
    from skimage import data

    photo = data.astronaut()  # (512, 512, 3) uint8 RGB, shipped with scikit-image
    height, width = photo.shape[:2]
    centre = np.array([width / 2, height * 0.6])
    depth = 4.5
    rows: dict[str, list] = {key: [] for key in ("imgname", "center", "scale", "part", "S")}
    for sequence in range(sequences):
        camera = CAMERAS[sequence % len(CAMERAS)]
        folder = f"S9/S9_Demo_{sequence + 1}.{camera}"
        source = photo if sequence % 2 == 0 else photo[:, ::-1]
        for frame in range(frames_per_sequence):
            shift = SHIFT_PX * frame
            image = np.pad(source, ((0, 0), (shift, 0), (0, 0)), mode="edge")[:, :width]
            imgname = f"{folder}/S9_Demo_{sequence + 1}.{camera}_{frame + 1:06d}.jpg"
            path = tmp / "images" / imgname
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(image)).save(path, quality=95)
            joints = SKELETON + [shift * depth / FOCAL, 0.0, depth]
            uv = joints[:, :2] / joints[:, 2:] * FOCAL + centre
            low, high = uv.min(axis=0), uv.max(axis=0)
            rows["imgname"].append(imgname)
            rows["center"].append((low + high) / 2)
            rows["scale"].append(1.2 * float(np.max(high - low)) / 200.0)
            rows["part"].append(np.concatenate([uv, np.ones((17, 1))], axis=1))
            rows["S"].append(np.concatenate([joints, np.ones((17, 1))], axis=1))
    arrays = {key: np.asarray(values, dtype=None if key == "imgname" else np.float64) for key, values in rows.items()}
    write_npz(tmp / ANNOTATION, arrays)
