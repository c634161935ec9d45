"""The run folder on the real SLURM cluster (issue 10): refused submissions pin nothing, one array at a time, a
resubmit keeps the run's resources, status shows the chained merge, Ctrl-C of a waiting launch leaves the array."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SLURM_TEST_CLUSTER, launch, wait_until
from data.minisets import MAKERS

from shardprep.runtime.run_folder import RunFolder

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]
NO_WAIT = tuple(o for o in SLURM_TEST_CLUSTER if o != "wait=true")


def test_a_request_slurm_would_never_run_is_refused_and_pins_nothing(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    for override, said in (("cluster.cpus_per_task=64", "never run"), ("cluster.partition=nosuch", "partition")):
        done = launch("run.py", *SLURM_TEST_CLUSTER, "shards=3", override, f"out_dir={run_dir}", demo_root=demo_root,
                      check=False)
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not run_dir.exists()
    # The user's next command, with another shard count, is not held to the refused one.
    launch("run.py", *SLURM_TEST_CLUSTER, "shards=2", f"out_dir={run_dir}", demo_root=demo_root)
    assert RunFolder(run_dir).manifest().shards == 2


def test_a_second_launch_into_a_live_array_is_refused_naming_the_job(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    command = ("run.py", *NO_WAIT, "shards=2", "stage.seconds_per_item=2", f"out_dir={run_dir}")
    launch(*command, demo_root=demo_root)
    job = RunFolder(run_dir).submissions()[-1]["job_id"]
    try:
        for extra in ((), ("force=true", "stage.bins=8")):
            done = launch(*command, *extra, demo_root=demo_root, check=False)
            assert done.returncode == 2 and f"scancel {job}" in done.stderr, done.stderr
        assert len(RunFolder(run_dir).submissions()) == 1
        assert RunFolder(run_dir).manifest().config["stage"]["bins"] == 16  # the refused force changed nothing
    finally:
        subprocess.run(["scancel", job], check=False)


def queued(job: str) -> bool:
    shown = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True)
    return bool(shown.stdout.strip())


def requested(job: str) -> set[str] | None:
    """Partition|time limit|memory of the job's tasks as SLURM's accounting recorded them; None until every row has
    them (a row written at submission can lack them for a moment)."""
    shown = subprocess.run(["sacct", "-n", "-P", "-X", "--format=Partition,Timelimit,ReqMem", "-j", job],
                           capture_output=True, text=True)
    rows = shown.stdout.split()
    return set(rows) if rows and all(row.split("|")[0] and row.split("|")[1] for row in rows) else None


def test_an_array_over_max_array_size_is_refused_then_the_allowed_count_submits(tmp_path: Path,
                                                                                demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    items = ("dataset.frames_per_sequence=501", "stage.seconds_per_item=0")  # 2 x 501 = 1002 items, one per shard
    done = launch("run.py", *NO_WAIT, *items, "shards=1002", f"out_dir={run_dir}", demo_root=demo_root, check=False)
    assert done.returncode == 2 and "1001" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not run_dir.exists()  # nothing pinned: the shard count is free
    launch("run.py", *NO_WAIT, *items, "shards=1001", f"out_dir={run_dir}", demo_root=demo_root)
    folder = RunFolder(run_dir)
    job = folder.submissions()[-1]["job_id"]
    subprocess.run(["scancel", job], check=False)  # 1001 tasks would hold the test cluster for minutes
    assert folder.manifest().shards == 1001 and len(folder.submissions()[-1]["shards"]) == 1001


def test_resubmit_keeps_the_resources_of_the_first_submission(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    asked = ("cluster.partition=low", "cluster.time_min=7", "cluster.mem_gb=1")
    launch("run.py", *SLURM_TEST_CLUSTER, *asked, "shards=2", f"out_dir={run_dir}", demo_root=demo_root)
    folder = RunFolder(run_dir)
    first = folder.submissions()[-1]["job_id"]
    assert wait_until(lambda: requested(first), 60, "sacct of the first array") == {"low|00:07:00|1G"}
    sorted(folder.shard_folder(1).iterdir())[0].unlink()
    launch("status.py", f"out_dir={run_dir}", "resubmit=true", demo_root=demo_root)  # no cluster settings given
    job = folder.submissions()[-1]["job_id"]
    try:
        assert job != first
        assert wait_until(lambda: requested(job), 60, "sacct of the resubmitted task") == {"low|00:07:00|1G"}
        wait_until(lambda: not queued(job), 300, "the resubmitted task to finish")
        status = json.loads(launch("status.py", f"out_dir={run_dir}", "output=json", demo_root=demo_root).stdout)
        assert status["totals"]["done"] == 12
    finally:
        subprocess.run(["scancel", job], check=False)


def test_status_shows_the_chained_merge_jobs_state(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ("stage=image_stats", *MAKERS["h36m"](tmp_path / "h36m"), f"out_dir={run_dir}", "shards=2")
    launch("run.py", *args, *SLURM_TEST_CLUSTER, "merge_after=true")
    merge_job = [s for s in RunFolder(run_dir).submissions() if s["kind"] == "merge"][-1]["job_id"]
    status = json.loads(launch("status.py", *args, "output=json").stdout)
    assert status["merge"] == {"job": merge_job, "state": "COMPLETED"}
    assert f"merge job {merge_job}: COMPLETED" in launch("status.py", *args).stdout
    assert (run_dir / "merged" / "h36m_stats_train.npz").is_file()


def test_ctrl_c_of_a_waiting_launch_leaves_the_array_running_and_the_rerun_works(tmp_path: Path,
                                                                                 demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    command = ("run.py", *SLURM_TEST_CLUSTER, "shards=2", "stage.seconds_per_item=1", f"out_dir={run_dir}")
    folder = RunFolder(run_dir)
    waiting = subprocess.Popen([sys.executable, str(REPO / "launch" / command[0]), "stage=image_stats", *command[1:]],
                               cwd=REPO, env={**os.environ, "SHARDPREP_DEMO_ROOT": str(demo_root)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = wait_until(lambda: folder.submissions() and folder.submissions()[-1]["job_id"], 120, "the submission")
        wait_until(folder.manifest_path.is_file, 30, "the manifest")
        time.sleep(1)  # the launcher is now waiting on the array
        waiting.send_signal(signal.SIGINT)
        _, stderr = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    try:
        assert waiting.returncode == 130 and "Traceback" not in stderr, stderr
        said = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
        assert len(said) == 1 and f"job {job} keeps running on SLURM" in said[0] and f"scancel {job}" in said[0]
        assert folder.manifest().shards == 2 and len(folder.submissions()) == 1  # the run stays pinned to its array
        if queued(job):  # still live: a relaunch is refused naming it, and submits nothing
            again = launch(*command, demo_root=demo_root, check=False)
            assert again.returncode == 2 and f"scancel {job}" in again.stderr, again.stderr
            assert len(folder.submissions()) == 1
        wait_until(lambda: not queued(job), 300, "the array to finish without its launcher")
    finally:
        subprocess.run(["scancel", job], check=False)
    launch(*command, demo_root=demo_root)  # the re-run finds the array's work done
    status = json.loads(launch("status.py", f"out_dir={run_dir}", "output=json", demo_root=demo_root).stdout)
    assert status["totals"]["done"] == 12
