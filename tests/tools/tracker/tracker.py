"""Stand-in for TAPIP3D: video + camera output -> 3D point tracks.

`--batch-size` above `--max-batch` fails like PyTorch does on a full GPU. Every run prints the memory figure the
stage packs workers by (`--mb-per-batch` x batch size), as a real tool would from torch.cuda.max_memory_allocated.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import utils  # this tool's own package: must not be the camera tool's

parser = argparse.ArgumentParser()
parser.add_argument("--video", required=True)
parser.add_argument("--camera", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--batch-size", type=int, required=True)
parser.add_argument("--max-batch", type=int, default=1_000_000)
parser.add_argument("--mb-per-batch", type=float, default=100.0)
parser.add_argument("--sleep", type=float, default=0.0)
args = parser.parse_args()

started = time.time()
assert utils.NAME == "tracker", utils.__file__
print(f"SHARDPREP_PEAK_MEMORY_MB={args.mb_per_batch * args.batch_size}", flush=True)
if args.batch_size > args.max_batch:
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(1)
time.sleep(args.sleep)
camera = Path(args.camera)
tracks = utils.track(np.load(camera / "depth.npy"), np.load(camera / "poses.npy"))
out = Path(args.out)
np.save(out / "tracks.npy", tracks)
meta = {"utils": utils.NAME, "pid": os.getpid(), "batch_size": args.batch_size, "start": started,
        "end": time.time()}
(out / "meta.json").write_text(json.dumps(meta))
