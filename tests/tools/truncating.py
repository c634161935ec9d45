"""A tool that exits 0 but leaves a truncated array behind (as when a disk fills or a writer dies mid-file)."""

import argparse
from pathlib import Path

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
args = parser.parse_args()
path = Path(args.out) / "tracks.npy"
np.save(path, np.zeros((10, 8, 3), dtype=np.float32))
with open(path, "r+b") as handle:
    handle.truncate(path.stat().st_size - 50)
