"""Merge throughput: 100 000 per-frame depth checkpoints merged into one XYCD NPZ, naive loop vs the pooled merge.

    python benchmarks/merge_throughput.py [--frames 100000] [--shards 20] [--workers N]

Builds a synthetic H36M-format annotation of `frames` rows and a finished depth run over it (manifest + one
checkpoint per frame in the depth stage's schema, spread over `shards` shard folders), then times, in this run:
  naive      a plain loop: `np.load` every checkpoint, keep its arrays, stack them at the end (no merge logic);
  workers=1  `launch/merge.py` logic in this process (chunked reads, row join, NPZ + dets written);
  workers=N  the same through a pool of N processes (default: all cores).
The files are freshly written, so they are read from the page cache: this measures the CPU cost of opening and
parsing checkpoints, not the disk or network file system of a cluster.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from shardprep.merge.job import run_merge
from shardprep.runtime.build import build_dataset
from shardprep.runtime.config import load_config
from shardprep.runtime.manifest import Manifest, items_digest
from shardprep.runtime.npz import write_npz
from shardprep.runtime.run_folder import RunFolder
from shardprep.runtime.sharding import plan_shards

FINGERPRINT = "benchmark"
FRAMES_PER_SEQUENCE = 1000


def make_run(base: Path, frames: int, shards: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = [
        f"S1/S1_Act_{s}.54138969/S1_Act_{s}.54138969_{f + 1:06d}.jpg"
        for s in range(-(-frames // FRAMES_PER_SEQUENCE)) for f in range(FRAMES_PER_SEQUENCE)
    ][:frames]
    write_npz(base / "h36m/annotation_body3d/fps10/h36m_train.npz", {
        "imgname": np.array(names),
        "center": rng.uniform(400, 600, (frames, 2)),
        "scale": rng.uniform(2, 4, frames),
        "part": rng.uniform(0, 1000, (frames, 17, 3)),
        "S": rng.normal(0, 1, (frames, 17, 4)),
    })
    (base / "h36m/images").mkdir()
    overrides = ["dataset=h36m", f"dataset.root={base / 'h36m'}", "~dataset.annotations.test", "dataset.cameras=null",
                 f"out_dir={base / 'run'}"]
    config = load_config([*overrides, "stage=image_stats"])
    config["stage"] = {"name": "depth"}
    items = build_dataset(config).items()
    plan = plan_shards(items, shards)
    RunFolder(base / "run").write_manifest(Manifest(config, plan, len(items), items_digest(items), FINGERPRINT, "benchmark"))
    template = base / "template.npz"
    write_npz(template, {
        "keypoints": rng.uniform(0, 1000, (17, 2)).astype(np.float32),
        "scores": rng.uniform(0, 1, 17).astype(np.float32),
        **{key: rng.uniform(2, 6, 17).astype(np.float32) for key in ("depth_point", "depth_min", "depth_max")},
        "in_image": np.ones(17, bool),
        "bbox": np.array([1, 2, 300, 400, 0.9], np.float32),
        "image_size": np.array([1002, 1000], np.int32),
        "detected": np.array(True),
        "depth_radius": np.array(3, np.int32),
        "fingerprint": np.array(FINGERPRINT),
    })
    data = template.read_bytes()
    for shard, (start, end) in enumerate(plan):
        folder = RunFolder(base / "run").shard_folder(shard)
        folder.mkdir(parents=True)
        for item in items[start:end]:
            (folder / f"{item.id}.npz").write_bytes(data)
    return [*overrides, "stage=depth"]


def naive(run_dir: Path) -> int:
    rows = []
    for path in sorted(run_dir.glob("checkpoints/*/*.npz")):
        with np.load(path) as data:
            rows.append({key: data[key] for key in data.files})
    stacked = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
    return len(stacked["keypoints"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as tmp:
        base = Path(tmp)
        started = time.perf_counter()
        args = make_run(base, options.frames, options.shards)
        print(f"{options.frames} checkpoints in {options.shards} shards written in {time.perf_counter() - started:.1f} s; "
              f"{os.cpu_count()} cores")
        timings = {}
        started = time.perf_counter()
        assert naive(base / "run") == options.frames
        timings["naive loop (np.load each, stack)"] = time.perf_counter() - started
        for workers in sorted({1, options.workers}):
            started = time.perf_counter()
            run_merge([*args, f"workers={workers}"])
            timings[f"merge workers={workers}"] = time.perf_counter() - started
    base_time = timings["merge workers=1"]
    print("| method | seconds | frames/s | vs workers=1 |")
    print("|---|---:|---:|---:|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.1f} | {options.frames / seconds:,.0f} | {base_time / seconds:.2f}x |")
    if options.workers > 1:
        # Amdahl: T(w) = serial + parallel / w. Two measured points give both parts, the rest is extrapolated.
        one, many, n = timings["merge workers=1"], timings[f"merge workers={options.workers}"], options.workers
        serial = min(one, max(0.0, (n * many - one) / (n - 1)))
        parallel = one - serial
        per_million = 1e6 / options.frames
        print(f"Amdahl fit: serial {serial:.1f} s + parallel {parallel:.1f} s per {options.frames} frames; "
              f"extrapolated (not measured) 1 M frames with 16 workers ~ "
              f"{per_million * (serial + parallel / 16) / 60:.1f} min")

if __name__ == "__main__":
    main()
