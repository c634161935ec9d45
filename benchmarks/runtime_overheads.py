"""Runtime overheads: submitting a 20-task array, and the resume scan of a run folder with 100 000 checkpoints.

    python benchmarks/runtime_overheads.py [--items 100000] [--skip-submit]

Submission is measured twice on the SLURM cluster that `sbatch` reaches (skipped without one): the whole launcher
command as a user types it, and the `submit` call alone (one sbatch through submitit). The scan is measured as the
task does it (one listing of the shard folder, then a header-and-fingerprint validation per file) against the naive
way (a stat and a full `np.load` of every file), and the listing-only count that `status` does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shardprep.runtime.store import ShardStore
from shardprep.stages.image_stats import ImageStatsStage

REPO = Path(__file__).resolve().parent.parent


def make_checkpoints(run_dir: Path, count: int) -> tuple[ShardStore, list[str]]:
    store = ShardStore(run_dir, 0, ImageStatsStage("image_stats").outputs, fingerprint="0123456789abcdef")
    rng = np.random.default_rng(0)
    arrays = {"mean": rng.random(3), "std": rng.random(3), "histogram": rng.integers(0, 99, (3, 16)),
              "image_size": np.array([1002, 1000])}
    ids = [f"S1_Walking.54138969_{i:06d}" for i in range(count)]
    for item_id in ids:
        store.write(item_id, {"stats": arrays})
    return store, ids


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def bench_scan(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        store, ids = make_checkpoints(Path(tmp), count)
        print(f"wrote {count} checkpoints in {time.perf_counter() - started:.1f} s "
              f"({count / (time.perf_counter() - started):.0f} files/s, atomic write + validate)")
        for cache in ("warm", "cold"):
            if cache == "cold" and not drop_page_cache():
                print("  (cold-cache figures skipped: cannot drop the page cache without root)")
                continue
            started = time.perf_counter()
            missing, invalid = store.scan(ids)
            scan = time.perf_counter() - started
            assert not missing and not invalid
            if cache == "cold":
                drop_page_cache()
            started = time.perf_counter()
            for item_id in ids:
                path = store.folder / f"{item_id}.npz"
                if path.exists():
                    with np.load(path, allow_pickle=False) as data:
                        {key: data[key] for key in data.files}
            naive = time.perf_counter() - started
            if cache == "cold":
                drop_page_cache()
            started = time.perf_counter()
            listed = len(store.list_files())
            listing = time.perf_counter() - started
            print(f"{cache} cache, {count} checkpoints: resume scan {scan:.2f} s ({scan / count * 1e6:.0f} us/file); "
                  f"naive stat+load {naive:.2f} s ({naive / scan:.1f}x slower); status listing {listing:.3f} s "
                  f"({listed} files)")


def bench_submit() -> None:
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        print("submission: skipped (no SLURM cluster answers)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SHARDPREP_DEMO_ROOT": f"{tmp}/demo"}
        overrides = ["dataset.frames_per_sequence=10", "shards=20", "cluster=slurm", "cluster.mem_gb=1",
                     "cluster.cpus_per_task=1", "cluster.gpus_per_task=0", "stage.seconds_per_item=0"]
        for attempt, out in enumerate(("a", "b")):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, str(REPO / "launch/run.py"), *overrides, f"out_dir={tmp}/{out}"],
                                  capture_output=True, text=True, env=env, check=True)
            elapsed = time.perf_counter() - started
            job = done.stdout.split()[3].rstrip(":")
            print(f"launch command, 20-task array (job {job}), run {attempt + 1}: {elapsed:.2f} s wall "
                  f"(interpreter start, config, dataset, manifest, one sbatch)")
            subprocess.run(["scancel", job], check=False)
        from shardprep.runtime.config import load_config
        from shardprep.runtime.run import prepare, submit

        config = load_config([*overrides, f"out_dir={tmp}/c"])
        run_dir, manifest = prepare(config)
        started = time.perf_counter()
        submission = submit(config, run_dir, manifest)
        elapsed = time.perf_counter() - started
        print(f"submit() alone, 20-task array (job {submission.job_id}): {elapsed * 1000:.0f} ms, "
              f"{len(submission.jobs)} tasks in one sbatch")
        subprocess.run(["scancel", submission.job_id], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--skip-submit", action="store_true")
    args = parser.parse_args()
    if not args.skip_submit:
        bench_submit()
    bench_scan(args.items)


if __name__ == "__main__":
    main()
