"""The runtime on the real one-node SLURM cluster: array jobs, kills, scancel, time limits, status and resubmit.

Each test submits real array jobs through the launchers, as a user would, and asserts on the files they produce.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SLURM_TEST_CLUSTER, launch, wait_until

from shardprep.runtime.errors import ConfigError
from shardprep.runtime.executor import check_array_size, max_array_size
from shardprep.runtime.npz import read_npz
from shardprep.runtime.run_folder import RunFolder
from shardprep.stages.image_stats import ImageStatsStage

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]
NO_WAIT = tuple(o for o in SLURM_TEST_CLUSTER if o != "wait=true")


def files_by_shard(run_dir: Path) -> dict[str, list[str]]:
    return {folder.name: sorted(p.name for p in folder.iterdir()) for folder in sorted((run_dir / "checkpoints").iterdir())}


def all_files(run_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in (run_dir / "checkpoints").rglob("*") if p.is_file()}


def assert_complete_and_clean(run_dir: Path, items: int) -> None:
    """Zero missing, zero corrupt, zero duplicate checkpoints, no temporary leftovers."""
    names = [name for shard in files_by_shard(run_dir).values() for name in shard]
    assert len(names) == len(set(names)) == items, names
    assert not any(name.startswith(".tmp-") for name in names)
    fingerprint = json.loads((run_dir / "manifest.json").read_text())["fingerprint"]
    stage = ImageStatsStage("image_stats")
    for shard in range(len(files_by_shard(run_dir))):
        store = RunFolder(run_dir).shard_store(shard, stage.outputs, fingerprint)
        ids = [name[: -len(".npz")] for name in files_by_shard(run_dir)[f"shard-{shard:05d}"]]
        assert store.scan(ids) == ({}, 0)


def last_job(run_dir: Path) -> str:
    return RunFolder(run_dir).submissions()[-1]["job_id"]


def task_id(run_dir: Path, shard: int) -> str:
    return RunFolder(run_dir).submissions()[-1]["tasks"][str(shard)]


def job_finished(job_id: str) -> bool:
    queued = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
    return queued.returncode == 0 and not queued.stdout.strip() or "Invalid job id" in queued.stderr


def sacct_states(job_id: str, tasks: list[str]) -> dict[str, str]:
    """State of each of `tasks` (SLURM task ids of job `job_id`) from accounting, once it lists them all: slurmctld
    hands records to slurmdbd asynchronously, and until then sacct can show a finished array as one line."""
    def listed():
        out = subprocess.run(["sacct", "-n", "-P", "-X", "--format=JobID,State", "-j", job_id], capture_output=True,
                             text=True)
        states = dict(line.split("|")[:2] for line in out.stdout.splitlines() if "|" in line)
        return {task: states[task] for task in tasks} if all(task in states for task in tasks) else None

    return wait_until(listed, 60, f"accounting to list {', '.join(tasks)} of job {job_id}")


def running_attempt(run_dir: Path, shard: int, min_files: int):
    """The shard's attempt once it has written at least `min_files` checkpoints and is still running."""
    folder = run_dir / "checkpoints" / f"shard-{shard:05d}"

    def ready():
        attempts = RunFolder(run_dir).progress(shard).attempts
        done = len([p for p in folder.glob("*.npz")]) if folder.exists() else 0
        return attempts[-1] if attempts and attempts[-1].state == "running" and done >= min_files else None

    return wait_until(ready, 120, f"shard {shard} to be running with {min_files} checkpoints")


def test_array_of_three_equals_single_local_run(tmp_path: Path, demo_root: Path) -> None:
    slurm_run, local_run = tmp_path / "slurm", tmp_path / "local"
    launch("run.py", "shards=3", f"out_dir={slurm_run}", *SLURM_TEST_CLUSTER, demo_root=demo_root)
    launch("run.py", "shards=1", "cluster=local", f"out_dir={local_run}", demo_root=demo_root)
    assert len(RunFolder(slurm_run).submissions()) == 1 and RunFolder(slurm_run).submissions()[0]["shards"] == [0, 1, 2]
    scripts = list((slurm_run / "logs").rglob("*_submission.sh"))  # submitit keeps the sbatch script it submitted
    assert len(scripts) == 1 and "#SBATCH --array=0-2%" in scripts[0].read_text()
    states = sacct_states(last_job(slurm_run), [task_id(slurm_run, shard) for shard in range(3)])
    assert sorted(states.values()) == ["COMPLETED"] * 3, states
    assert_complete_and_clean(slurm_run, 12)
    a, b = all_files(slurm_run), all_files(local_run)
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = read_npz(a[name]), read_npz(b[name])
        assert all(np.array_equal(x[k], y[k]) for k in x if k != "fingerprint")

    # A truncated checkpoint left on disk is found and redone by the next run of the same command.
    victim = sorted(a)[5]
    a[victim].write_bytes(a[victim].read_bytes()[:200])
    launch("run.py", "shards=3", f"out_dir={slurm_run}", *SLURM_TEST_CLUSTER, demo_root=demo_root)
    assert_complete_and_clean(slurm_run, 12)
    redone = [RunFolder(slurm_run).progress(s).attempts[-1] for s in range(3)]
    assert sum(a.invalid_at_start for a in redone) == 1 and sum(a.processed for a in redone) == 1


@pytest.mark.parametrize("interrupt", ["kill -9", "scancel"])
def test_interrupted_task_resumes_with_only_unfinished_items_redone(
    tmp_path: Path, demo_root: Path, interrupt: str
) -> None:
    run_dir = tmp_path / "run"
    command = ("run.py", "shards=2", "stage.seconds_per_item=2.5", "stage.batch_size=1", f"out_dir={run_dir}")
    launch(*command, *NO_WAIT, demo_root=demo_root)
    job = last_job(run_dir)
    attempt = running_attempt(run_dir, 0, min_files=2)
    if interrupt == "kill -9":
        os.kill(attempt.pid, signal.SIGKILL)
    else:
        subprocess.run(["scancel", task_id(run_dir, 0)], check=True)
    wait_until(lambda: job_finished(job), 120, f"job {job} to leave the queue")
    expected_state = "FAILED" if interrupt == "kill -9" else "CANCELLED"
    assert sacct_states(job, [task_id(run_dir, 0)])[task_id(run_dir, 0)].startswith(expected_state)

    before = {name: path.stat().st_mtime_ns for name, path in all_files(run_dir).items()}
    unfinished = 12 - len(before)
    assert 0 < unfinished < 12
    status = json.loads(launch("status.py", f"out_dir={run_dir}", "output=json").stdout)
    on_disk = {s: len(names) for s, names in enumerate(files_by_shard(run_dir).values())}
    assert {row["shard"]: row["done"] for row in status["shards"]} == on_disk
    assert status["shards"][0]["state"].startswith(expected_state)

    launch(*command, *SLURM_TEST_CLUSTER, demo_root=demo_root)
    assert_complete_and_clean(run_dir, 12)
    after = all_files(run_dir)
    assert {name: after[name].stat().st_mtime_ns for name in before} == before
    last = [RunFolder(run_dir).progress(s).attempts[-1] for s in (0, 1)]
    assert sum(a.todo for a in last) == unfinished and sum(a.processed for a in last) == unfinished


def test_status_resubmits_only_incomplete_shards(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    command = ("run.py", "shards=3", "stage.seconds_per_item=3.0", "stage.batch_size=1", f"out_dir={run_dir}")
    launch(*command, *NO_WAIT, demo_root=demo_root)
    job = last_job(run_dir)
    running_attempt(run_dir, 1, min_files=1)
    subprocess.run(["scancel", task_id(run_dir, 1)], check=True)
    wait_until(lambda: job_finished(job), 120, f"job {job} to leave the queue")

    status = json.loads(launch("status.py", f"out_dir={run_dir}", "output=json").stdout)
    on_disk = [len(names) for names in files_by_shard(run_dir).values()]
    assert [row["done"] for row in status["shards"]] == on_disk
    assert [row["todo"] for row in status["shards"]] == [row["items"] - row["done"] for row in status["shards"]]
    assert status["shards"][1]["todo"] > 0 and status["shards"][0]["todo"] == status["shards"][2]["todo"] == 0

    launch("status.py", f"out_dir={run_dir}", "resubmit=true", *SLURM_TEST_CLUSTER)
    assert RunFolder(run_dir).submissions()[-1]["shards"] == [1]
    assert_complete_and_clean(run_dir, 12)
    table = launch("status.py", f"out_dir={run_dir}").stdout
    assert table.splitlines()[-1].split()[:5] == ["total", "12", "12", "0", "0"]


def test_bad_config_submits_nothing(tmp_path: Path, demo_root: Path) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    for overrides in (("dataset=no_such",), ("shards=0",), ("shards=99",), ("out_dir=/proc/nope",)):
        done = launch("run.py", f"out_dir={tmp_path / 'run'}", *overrides, *SLURM_TEST_CLUSTER, demo_root=demo_root,
                      check=False)
        assert done.returncode == 2 and done.stderr.startswith("shardprep: error: ") and "Traceback" not in done.stderr
    submitted = subprocess.run(["sacct", "-n", "-X", "-P", "--format=JobID", f"--starttime={since}",
                                "--name=shardprep-demo-image_stats"], capture_output=True, text=True, check=True)
    assert submitted.stdout.strip() == ""


def test_time_limit_requeues_the_task_which_finishes_from_its_checkpoints(tmp_path: Path, demo_root: Path) -> None:
    # 24 items of 3 s each cannot finish inside a 2-minute limit once SLURM's USR2 arrives (60 s before it, up to
    # 30 s earlier on this cluster's timer): submitit requeues the array task, and it goes on from its checkpoints.
    run_dir = tmp_path / "run"
    overrides = [o for o in SLURM_TEST_CLUSTER if not o.startswith("cluster.time_min")]
    launch("run.py", "shards=1", "dataset.frames_per_sequence=12", "stage.seconds_per_item=3.0", "stage.batch_size=1",
           "cluster.time_min=2", "cluster.signal_delay_s=60", f"out_dir={run_dir}", *overrides, demo_root=demo_root,
           timeout=900)
    assert_complete_and_clean(run_dir, 24)
    attempts = RunFolder(run_dir).progress(0).attempts
    assert len(attempts) >= 2 and attempts[-1].restart_count >= 1 and attempts[-1].state == "finished"
    for earlier, later in zip(attempts, attempts[1:]):
        assert later.valid_at_start > earlier.valid_at_start  # every requeue went on from where the last one was
        assert later.todo == 24 - later.valid_at_start
    assert sacct_states(last_job(run_dir), [task_id(run_dir, 0)])[task_id(run_dir, 0)] == "COMPLETED"
    status = json.loads(launch("status.py", f"out_dir={run_dir}", "output=json").stdout)
    assert status["shards"][0]["requeues"] >= 1 and status["totals"]["done"] == 24


def test_more_shards_than_max_array_size_is_refused() -> None:
    limit = max_array_size()
    assert limit is not None  # the test cluster sets MaxArraySize explicitly
    check_array_size(limit)
    with pytest.raises(ConfigError, match="MaxArraySize"):
        check_array_size(limit + 1)
