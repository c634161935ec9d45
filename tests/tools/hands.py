"""Stand-in for WiLoR: video + tracks -> per-frame 3D keypoints of two hands (T, 2, 21, 3) and their scores."""

import argparse
from pathlib import Path

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--video", required=True)
parser.add_argument("--tracks", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()

frames = np.load(args.video, allow_pickle=False)
tracks = np.load(Path(args.tracks) / "tracks.npy")
joints = np.linspace(0.0, 1.0, 21, dtype=np.float32)
hands = tracks[:, :2, None, :] + joints[None, None, :, None]  # (T, 2, 21, 3)
scores = frames.reshape(len(frames), -1).mean(axis=1, keepdims=True).repeat(2, axis=1) / 255.0
np.save(Path(args.out) / "keypoints.npy", hands.astype(np.float32))
np.save(Path(args.out) / "scores.npy", scores.astype(np.float32))
