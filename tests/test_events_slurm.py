"""The events stage through the real SLURM array: a run cancelled mid-shard resumes and loses nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SLURM_TEST_CLUSTER, launch, wait_until
from data.dsec_synthetic import make_sequence, read_all_events

from shardprep.datasets.dsec import DSECDataset
from shardprep.runtime.npz import read_npz
from shardprep.runtime.run_folder import RunFolder

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]
NO_WAIT = tuple(o for o in SLURM_TEST_CLUSTER if o != "wait=true")
SUFFIXES = ("events.npz", "png", "frames", "mp4")


def complete_clips(folder: Path) -> set[str]:
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    ids = {name.removesuffix(".mp4") for name in names if name.endswith(".mp4")}
    return {i for i in ids if all(f"{i}.{suffix}" in names for suffix in SUFFIXES)}


def test_cancelled_events_array_resumes_and_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "dsec"
    # Full-size frames make each clip's MP4 take a moment, so the array can be cancelled mid-shard.
    for seed, name in enumerate(("zurich_city_00_a", "zurich_city_01_b")):
        make_sequence(root / "train" / name, seed=seed, frame_size=(640, 480), gaps_ms=((300, 700),))
    run_dir = tmp_path / "run"
    command = ("events.py", "dataset=dsec", f"dataset.root={root}", "~dataset.splits.test",
               "dataset.durations_ms=[500,1000]", "shards=2", f"out_dir={run_dir}")
    launch(*command, *NO_WAIT)
    job = RunFolder(run_dir).submissions()[-1]["job_id"]
    shard0 = run_dir / "checkpoints" / "shard-00000"
    wait_until(lambda: len(complete_clips(shard0)) >= 1, 180, "shard 0 to finish its first clip",
               interval=0.05)  # a shard takes a few seconds: kill it well before its end
    # SIGKILL at once, as a node failure would (a plain scancel leaves KillWait seconds, in which the now fast
    # shards could finish), then cancel whatever had not started.
    subprocess.run(["scancel", "--full", "--signal=KILL", job], check=True)
    subprocess.run(["scancel", job], check=True)
    wait_until(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(),
               120, f"job {job} to leave the queue")

    files = {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").glob("shard-*/*")}
    items = 2 * 7 + 2 * 3  # per 2.2 s sequence: 7 clips of 500 ms, 3 of 1 s
    assert 0 < len(files) < 4 * items, "the array should have been cancelled part way"
    before = {name: mtime for name, mtime in files.items() if not name.startswith(".tmp-")}  # leftovers get removed

    launch(*command, *SLURM_TEST_CLUSTER)
    after = {p.name: p for p in (run_dir / "checkpoints").glob("shard-*/*")}
    assert len(after) == 4 * items and not any(name.startswith(".tmp-") for name in after)
    assert {name: after[name].stat().st_mtime_ns for name in before} == before
    complete_before = {n.removesuffix(".mp4") for n in before if n.endswith(".mp4")}
    complete_before = {i for i in complete_before if all(f"{i}.{suffix}" in before for suffix in SUFFIXES)}
    redone = sum(RunFolder(run_dir).progress(shard).attempts[-1].processed for shard in (0, 1))
    assert redone == items - len(complete_before)

    groups = json.loads(launch("status.py", f"out_dir={run_dir}", "by=group", "output=json").stdout)["groups"]
    assert [(row["group"], row["complete"], row["items"]) for row in groups] == [("train/500ms", 14, 14),
                                                                                 ("train/1s", 6, 6)]
    data = DSECDataset("dsec", str(root), {"train": "train"}, [500, 1000])
    full = {}
    for item in data.items():
        clip = data.clip(item)
        events = full.setdefault(clip.events_file, read_all_events(clip.events_file))
        absolute = events["t_offset"] + events["t"].astype(np.int64)
        chosen = (absolute >= clip.start_us) & (absolute < clip.end_us)
        saved = read_npz(after[f"{item.id}.events.npz"])
        assert np.array_equal(saved["x"], events["x"][chosen]) and int(saved["count"]) == int(chosen.sum())
