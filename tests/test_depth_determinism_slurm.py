"""The README's promise for the depth stage, through the real SLURM array: the merged files of `stage=depth_demo`
(seeded random RTMPose and Depth Anything, CPU) are byte-identical whether the run had one shard or three, a task was
killed mid-shard and resumed, or a third of the checkpoints were deleted and redone. And a redo in another
environment is said, by the task and by the merge, whose files then name both environments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SLURM_TEST_CLUSTER, launch, wait_until

from shardprep.runtime.npz import read_npz
from shardprep.runtime.run_folder import RunFolder

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]
NO_WAIT = tuple(o for o in SLURM_TEST_CLUSTER if o != "wait=true")
ITEMS = 12  # the demo dataset: 2 sequences of 6 frames; depth_demo batches 4 frames, so 3 fixed batches


def depth(run_dir: Path, shards: int, *cluster: str, demo_root: Path) -> tuple[str, ...]:
    command = ("depth.py", "dataset=demo", "stage=depth_demo", f"shards={shards}", f"out_dir={run_dir}")
    launch(*command, *(cluster or SLURM_TEST_CLUSTER), demo_root=demo_root)
    return command


def merged_bytes(run_dir: Path, demo_root: Path) -> dict[str, bytes]:
    done = launch("merge.py", "dataset=demo", "stage=depth_demo", f"out_dir={run_dir}", demo_root=demo_root)
    merged = run_dir / "merged"
    files = {path.name: path.read_bytes() for path in merged.iterdir() if path.is_file() and path.name[0] != "."}
    assert files, done.stderr
    return files


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").rglob("*.npz"))


def task_logs(run_dir: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in (run_dir / "logs").rglob("*.err"))


def test_merged_depth_files_do_not_depend_on_shards_kills_or_redos(tmp_path: Path, demo_root: Path) -> None:
    one, three, killed = tmp_path / "one", tmp_path / "three", tmp_path / "killed"
    depth(one, 1, demo_root=demo_root)
    reference = merged_bytes(one, demo_root)
    assert sorted(reference) == ["demo_xycd.npz", "demo_xycd_dets.npy"]
    keypoints = read_npz(one / "merged" / "demo_xycd.npz")["predicted_keypoints"]
    assert np.isfinite(keypoints).all() and np.ptp(keypoints) > 0  # the random models really ran

    depth(three, 3, demo_root=demo_root)
    assert [tuple(b) for b in RunFolder(three).manifest().plan] == [(0, 4), (4, 8), (8, 12)]
    assert merged_bytes(three, demo_root) == reference

    # One task killed (SIGKILL) once it has written part of its shard, then the same command again.
    command = ("depth.py", "dataset=demo", "stage=depth_demo", "shards=1", f"out_dir={killed}")
    launch(*command, *NO_WAIT, demo_root=demo_root)

    def part_written():
        attempts = RunFolder(killed).progress(0).attempts
        done = len(checkpoints(killed)) if (killed / "checkpoints").exists() else 0
        return attempts[-1] if attempts and attempts[-1].state == "running" and 0 < done < ITEMS else None

    os.kill(wait_until(part_written, 300, "the task to have written part of its shard").pid, signal.SIGKILL)
    job = RunFolder(killed).submissions()[-1]["job_id"]
    wait_until(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(),
               120, f"job {job} to leave the queue")
    left = len(checkpoints(killed))
    assert 0 < left < ITEMS
    launch(*command, *SLURM_TEST_CLUSTER, demo_root=demo_root)
    resumed = RunFolder(killed).progress(0).attempts[-1]
    assert resumed.todo == ITEMS - left and resumed.processed == ITEMS - left
    assert merged_bytes(killed, demo_root) == reference

    # A third of the checkpoints deleted, one in each fixed batch and more, then redone.
    victims = checkpoints(three)[::3]
    assert len(victims) == ITEMS // 3
    for path in victims:
        path.unlink()
    depth(three, 3, demo_root=demo_root)
    assert sum(RunFolder(three).progress(s).attempts[-1].processed for s in range(3)) == len(victims)
    assert merged_bytes(three, demo_root) == reference

    # The merged file names what made it: one environment, this machine's CPU and library versions.
    environments = json.loads(str(read_npz(one / "merged" / "demo_xycd.npz")["environments"]))
    assert len(environments) == 1 and environments[0]["device"].startswith("cpu")
    assert environments[0]["torch"] and environments[0]["mmpose"] and environments[0]["transformers"]


def test_a_redo_in_another_environment_is_said_and_recorded(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    depth(run_dir, 1, demo_root=demo_root)
    # The run's files as if made on a GPU: the record an attempt on an H200 node leaves in the progress file.
    progress_path = run_dir / "progress" / "shard-00000.json"
    record = json.loads(progress_path.read_text())
    mine = dict(record["attempts"][-1]["environment"])
    record["attempts"][-1]["environment"] = {**mine, "device": "NVIDIA H200", "driver": "570.124.06", "cuda": "12.8"}
    progress_path.write_text(json.dumps(record))
    checkpoints(run_dir)[0].unlink()
    depth(run_dir, 1, demo_root=demo_root)
    assert "differs from that of earlier outputs of this run" in task_logs(run_dir)
    assert "NVIDIA H200 -> cpu" in task_logs(run_dir)
    done = launch("merge.py", "dataset=demo", "stage=depth_demo", f"out_dir={run_dir}", demo_root=demo_root)
    assert "made in 2 environments" in done.stderr
    environments = json.loads(str(read_npz(run_dir / "merged" / "demo_xycd.npz")["environments"]))
    assert sorted(e["device"].split()[0] for e in environments) == ["NVIDIA", "cpu"]
