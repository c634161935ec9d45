"""The run folder on the real SLURM cluster (issue 10): refused submissions pin nothing, one array at a time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import SLURM_TEST_CLUSTER, launch

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
