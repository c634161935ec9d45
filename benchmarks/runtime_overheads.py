"""Runtime overheads: submitting a 20-task array, a resuming task's scan of its shard, and `status` of a whole run.

    python benchmarks/runtime_overheads.py [--items 1000000] [--shards 20] [--naive-items 20000] [--skip-submit]
                                           [--keep-folder PATH]

Submission is measured on the SLURM cluster that `sbatch` reaches (skipped without one): the whole launcher command as
a user types it, and the `submit` call alone (one sbatch through submitit).

The scan figures use a run folder of `--items` image_stats checkpoints in `--shards` shards, made through `RunFolder`
as a run makes them (one checkpoint written and validated by `ShardStore.write`, its bytes copied to every other
item's name: the validation reads headers and the fingerprint, not values). For one shard it times, in the same run:
  - without a validation cache (how every scan worked before the cache, and a first scan now): every file's zip
    headers and fingerprint are read;
  - with the cache that the scan above saved (a resuming task): only a directory listing and a stat per file;
  - the naive way, exists + a full `np.load` per file, on the first `--naive-items` files, scaled to the shard.
Then `status` of the whole run (`runtime.status.run_status`, what `launch/status.py` prints) with every shard's cache
warm, and once more after one file per shard was truncated (those are re-validated and counted as not done; the
truncated files are written whole again afterwards).

Making the 1 M-checkpoint folder takes minutes: `--keep-folder PATH` makes it at PATH once and reuses it on later runs
of the same `--items` and `--shards` (e.g. to profile `status` on it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shardprep.runtime.config import load_config
from shardprep.runtime.manifest import Manifest, code_version
from shardprep.runtime.run_folder import RunFolder
from shardprep.runtime.status import run_status
from shardprep.runtime.store import ShardStore
from shardprep.stages.image_stats import ImageStatsStage

REPO = Path(__file__).resolve().parent.parent
FINGERPRINT = "0123456789abcdef"


def item_id(index: int) -> str:
    return f"S1_Walking.54138969_{index:07d}"


def make_run(root: Path, items: int, shards: int) -> tuple[RunFolder, Manifest]:
    """A planned run folder (manifest as a launch writes it) whose every item has a valid checkpoint."""
    folder = RunFolder(root)
    config = load_config(["stage=image_stats", f"shards={shards}", f"out_dir={root.parent}", "cluster=local"])
    per_shard = -(-items // shards)
    plan = [(start, min(start + per_shard, items)) for start in range(0, items, per_shard)]
    manifest = Manifest(config, plan, items, "benchmark", FINGERPRINT, code_version(), fingerprint_since=0.0)
    folder.write_manifest(manifest)
    outputs = ImageStatsStage("image_stats").outputs
    rng = np.random.default_rng(0)
    stats = {"mean": rng.random(3), "std": rng.random(3), "histogram": rng.integers(0, 99, (3, 16)),
             "image_size": np.array([1002, 1000])}
    first = folder.store(manifest, 0, outputs)
    first.folder.mkdir(parents=True, exist_ok=True)
    first.write(item_id(0), {"stats": stats})
    payload = first.path(item_id(0), outputs[0]).read_bytes()
    for shard, (start, end) in enumerate(plan):
        shard_folder = folder.shard_folder(shard)
        shard_folder.mkdir(parents=True, exist_ok=True)
        for index in range(start, end):
            (shard_folder / f"{item_id(index)}.npz").write_bytes(payload)
    return folder, manifest


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def naive_scan(store: ShardStore, ids: list[str]) -> None:
    for name in ids:
        path = store.folder / f"{name}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                {key: data[key] for key in data.files}


def kept_run(root: Path, items: int, shards: int) -> tuple[RunFolder, Manifest]:
    """The run folder at `root`, made there first unless a complete one of this size is there already."""
    folder = RunFolder(root)
    done = root / "benchmark-folder-complete"
    if done.exists() and done.read_text() == f"{items} {shards}\n":
        manifest = folder.manifest()
        print(f"reusing the run folder of {items} checkpoints in {shards} shards at {root}")
        return folder, manifest
    if root.exists() and any(root.iterdir()):
        sys.exit(f"--keep-folder {root}: exists and is not a complete benchmark folder of --items {items} "
                 f"--shards {shards}: give an empty or new path")
    (folder, manifest), made = timed(lambda: make_run(root, items, shards))
    print(f"made a run folder of {items} checkpoints in {shards} shards in {made:.0f} s")
    done.write_text(f"{items} {shards}\n")
    return folder, manifest


def bench_scan(items: int, shards: int, naive_items: int, keep: Path | None) -> None:
    with contextlib.ExitStack() as stack:
        if keep is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR"))))
            (folder, manifest), made = timed(lambda: make_run(tmp / "run", items, shards))
            print(f"made a run folder of {items} checkpoints in {shards} shards in {made:.0f} s")
        else:
            folder, manifest = kept_run(keep, items, shards)
        scan_and_status(folder, manifest, naive_items)


def scan_and_status(folder: RunFolder, manifest: Manifest, naive_items: int) -> None:
    outputs = ImageStatsStage("image_stats").outputs
    items = manifest.item_count
    start, end = manifest.plan[0]
    ids = [item_id(index) for index in range(start, end)]
    count = len(ids)
    for cache in ("warm", "cold"):
        if cache == "cold" and not drop_page_cache():
            print("  (cold page-cache figures skipped: cannot drop the page cache without root)")
            continue
        store = folder.store(manifest, 0, outputs)
        store.cache_path.unlink(missing_ok=True)
        (missing, invalid), uncached = timed(lambda: store.scan(ids))
        assert not missing and not invalid, (len(missing), invalid)
        if cache == "cold":
            drop_page_cache()
        (missing, invalid), cached = timed(lambda: folder.store(manifest, 0, outputs).scan(ids))
        assert not missing and not invalid
        if cache == "cold":
            drop_page_cache()
        sample = ids[:naive_items]
        _, naive = timed(lambda: naive_scan(store, sample))
        naive *= count / len(sample)
        print(f"{cache} page cache, a resuming task's scan of its {count} checkpoints: validation cache "
              f"{cached:.2f} s ({cached / count * 1e6:.0f} us/file); without it {uncached:.1f} s "
              f"({uncached / count * 1e6:.0f} us/file, {uncached / cached:.0f}x); naive exists + np.load "
              f"{naive:.1f} s ({naive / cached:.0f}x; measured on {len(sample)} files)")
    # Every shard's task saved its cache when it finished; the benchmark does it the same way (one scan each).
    for shard in range(1, manifest.shards):
        start, end = manifest.plan[shard]
        folder.store(manifest, shard, outputs).scan([item_id(i) for i in range(start, end)])
    status, elapsed = timed(lambda: run_status(folder))
    done = status.totals()["done"]
    assert done == items, done
    print(f"status of the whole run ({items} checkpoints, {manifest.shards} shards), warm validation caches: "
          f"{elapsed:.2f} s ({elapsed / items * 1e6:.1f} us/file), {done} done")
    victims = [folder.shard_folder(shard) / f"{item_id(manifest.plan[shard][0])}.npz"
               for shard in range(manifest.shards)]
    payload = victims[0].read_bytes()
    for victim in victims:
        victim.write_bytes(payload[:100])
    status, elapsed = timed(lambda: run_status(folder))
    done = status.totals()["done"]
    for victim in victims:
        victim.write_bytes(payload)
    assert done == items - manifest.shards, done
    print(f"status after truncating one checkpoint per shard: {elapsed:.2f} s, {done} done "
          f"({items - done} truncated ones caught)")


def bench_submit() -> None:
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        print("submission: skipped (no SLURM cluster answers)")
        return
    from shardprep.runtime.run import preflight, prepare, submit

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
                  f"(interpreter start, config, dataset, preflight with sbatch --test-only, manifest, one sbatch)")
            subprocess.run(["scancel", job], check=False)
        os.environ["SHARDPREP_DEMO_ROOT"] = env["SHARDPREP_DEMO_ROOT"]
        launch = prepare(load_config([*overrides, f"out_dir={tmp}/c"]))
        _, checked = timed(lambda: preflight(launch.config, launch.manifest.shards))
        with launch.folder.lock():
            submission, elapsed = timed(lambda: submit(launch))
        print(f"preflight (MaxArraySize, sbatch --test-only): {checked * 1000:.0f} ms; submit() alone, 20-task array "
              f"(job {submission.job_id}): {elapsed * 1000:.0f} ms (manifest, one sbatch, submissions log)")
        subprocess.run(["scancel", submission.job_id], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--naive-items", type=int, default=20_000)
    parser.add_argument("--skip-submit", action="store_true")
    parser.add_argument("--keep-folder", type=Path, help="make the run folder here once, reuse it afterwards")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if not args.skip_submit:
        bench_submit()
    bench_scan(args.items, args.shards, min(args.naive_items, -(-args.items // args.shards)), args.keep_folder)


if __name__ == "__main__":
    main()
