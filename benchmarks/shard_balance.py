"""The longest convert shard of MPI-INF-3DHP, shards balanced by item count vs by frames, 20 shards by default.

    python benchmarks/shard_balance.py [--shards 20]

Items as the 3DHP raw dataset lists them (test subjects TS1-TS6, then train S1-S8 x Seq1-2 x the converter's 8
cameras), each weighing its frames: the release's per-sequence frame counts as MMPose's
`tools/dataset_converters/preprocess_mpi_inf_3dhp.py` hard-codes them (`train_frame_nums`, `test_frame_nums`; test
counts are all frames, valid ones are fewer). The same planner (runtime/sharding.py) either way: weights of 1 (what
the 3DHP items weighed before) or the frames. A shard's wall time follows its frames, the array's its longest shard.
"""

from __future__ import annotations

import argparse
import time

from shardprep.datasets.base import Item
from shardprep.runtime.sharding import plan_shards

TRAIN_FRAMES = {(1, 1): 6416, (1, 2): 12430, (2, 1): 6502, (2, 2): 6081, (3, 1): 12488, (3, 2): 12283,
                (4, 1): 6171, (4, 2): 6675, (5, 1): 12820, (5, 2): 12312, (6, 1): 6188, (6, 2): 6145,
                (7, 1): 6239, (7, 2): 6320, (8, 1): 6468, (8, 2): 6054}
TEST_FRAMES = {1: 6151, 2: 6080, 3: 5838, 4: 6007, 5: 320, 6: 492}
CAMERAS = [0, 1, 2, 4, 5, 6, 7, 8]


def frames_per_item() -> dict[str, int]:
    frames = {f"TS{s}": n for s, n in TEST_FRAMES.items()}
    frames.update({f"S{s}_Seq{q}_Cam{c}": n for (s, q), n in TRAIN_FRAMES.items() for c in CAMERAS})
    return frames


def longest(frames: dict[str, int], shards: int, weighted: bool) -> tuple[int, int, float]:
    items = [Item(key, sequence=key, weight=n if weighted else 1) for key, n in frames.items()]
    start = time.perf_counter()
    plan = plan_shards(items, shards)
    seconds = time.perf_counter() - start
    loads = [sum(frames[item.id] for item in items[a:b]) for a, b in plan]
    return max(loads), min(loads), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=20)
    args = parser.parse_args()
    frames = frames_per_item()
    total = sum(frames.values())
    print(f"3DHP: {len(frames)} videos, {total} frames, {args.shards} shards: ideal {total / args.shards:.0f} frames "
          f"per shard; largest video {max(frames.values())}")
    for label, weighted in (("by item count", False), ("by frames", True)):
        high, low, seconds = longest(frames, args.shards, weighted)
        print(f"{label:>14}: longest shard {high} frames ({high / (total / args.shards):.2f}x ideal), shortest "
              f"{low}, spread {high - low}; planned in {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
