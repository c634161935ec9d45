"""Stand-in for ViPE: video -> per-frame depth and camera poses. Imports its own top-level `utils` package."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import utils  # this tool's own package, next to this file

parser = argparse.ArgumentParser()
parser.add_argument("--video", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--sleep", type=float, default=0.0)
args = parser.parse_args()

started = time.time()
assert Path(utils.__file__).resolve().parent.parent == Path(__file__).resolve().parent, utils.__file__
assert utils.NAME == "camera"
frames = np.load(args.video, allow_pickle=False)
print(f"camera: {frames.shape[0]} frames", flush=True)
time.sleep(args.sleep)
depth = utils.depth_from_frames(frames)
poses = np.repeat(np.eye(4, dtype=np.float32)[None], len(frames), axis=0)
poses[:, 0, 3] = np.arange(len(frames), dtype=np.float32) * 0.1
out = Path(args.out)
np.save(out / "depth.npy", depth)
np.save(out / "poses.npy", poses)
meta = {"utils": utils.NAME, "pid": os.getpid(), "start": started, "end": time.time(),
        "pythonpath": os.environ.get("PYTHONPATH"), "shardprep_loaded": "shardprep" in sys.modules}
(out / "meta.json").write_text(json.dumps(meta))
