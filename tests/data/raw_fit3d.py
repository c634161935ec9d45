"""A tiny Fit3D in the layout of the official toolkit (imar_vision_datasets_tools, `util/dataset_util.py::read_data`),
for the convert stage's tests.

- `train/<sNN>/joints3d_25/<action>.json`: `{"joints3d_25": frames x 25 x 3}` (world m), what the toolkit reads with
  `json.load(f)['joints3d_25']`;
- `train/<sNN>/camera_parameters/<camera>/<action>.json`: `extrinsics` {R 3x3, T 1x3}, `intrinsics_w_distortion`
  {f, c, k 1x3, p 1x2}, `intrinsics_wo_distortion` {f, c}: the shapes its `project_3d_to_2d` indexes (`p[:, [1, 0]]`,
  `k @ [r2, r2^2, r2^3]`) and `(j3d - T) @ R^T` broadcasts;
- `train/<sNN>/videos/<camera>/<action>.mp4`: H.264 from imageio-ffmpeg's ffmpeg, frame i one grey level
  (`raw_h36m.grey(i)`), `extra_frames` longer than the joints (the toolkit cuts the video to the joints' length).
Seeded: the same call writes the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data.raw_h36m import HEIGHT, WIDTH, write_video

SUBJECTS = ["s03", "s10"]
CAMERAS = ["50591643", "58860488"]
ACTIONS = ["band_pull_apart", "walk_the_box"]
FRAMES = 5


def camera_json(rng: np.random.Generator) -> dict:
    angle = rng.uniform(-0.4, 0.4)
    rotation = [[np.cos(angle), 0.0, -np.sin(angle)], [0.0, 1.0, 0.0], [np.sin(angle), 0.0, np.cos(angle)]]
    focal = [float(rng.uniform(55, 60)), float(rng.uniform(55, 60))]
    centre = [WIDTH / 2 + float(rng.uniform(-2, 2)), HEIGHT / 2 + float(rng.uniform(-2, 2))]
    return {"extrinsics": {"R": rotation, "T": [[float(v) for v in rng.uniform(-0.3, 0.3, 2)] + [-4.0]]},
            "intrinsics_w_distortion": {"f": [focal], "c": [centre],
                                        "k": [[float(v) for v in rng.normal(0, 0.05, 3)]],
                                        "p": [[float(v) for v in rng.normal(0, 0.01, 2)]]},
            "intrinsics_wo_distortion": {"f": [focal], "c": [centre]}}


def write_raw_fit3d(root: Path, frames: int = FRAMES, extra_frames: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for subject in SUBJECTS:
        folder = root / "train" / subject
        for action in ACTIONS:
            joints = root / "train" / subject / "joints3d_25" / f"{action}.json"
            joints.parent.mkdir(parents=True, exist_ok=True)
            joints.write_text(json.dumps({"joints3d_25": rng.uniform(-0.8, 0.8, (frames, 25, 3)).tolist()}))
            for camera in CAMERAS:
                parameters = folder / "camera_parameters" / camera / f"{action}.json"
                parameters.parent.mkdir(parents=True, exist_ok=True)
                parameters.write_text(json.dumps(camera_json(rng)))
                write_video(folder / "videos" / camera / f"{action}.mp4", frames + extra_frames)
    return root
