"""The runtime on the multi-node test cluster (issue 14): arrays spread over nodes, a node lost mid-shard, preemption,
a drained node, a chained merge on another node.

Each test submits real arrays through the launchers and breaks the cluster as it breaks in production: a node's
slurmd and every process of its jobs killed at once, a job of a higher-priority partition taking a node, an admin's
drain. Every test puts the cluster back (tests/slurm/start-cluster.sh restarts a killed slurmd and resumes nodes).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import IN_CI, REPO, SLURM_TEST_CLUSTER, launch, wait_until
from data.minisets import MAKERS
from test_runtime_slurm import all_files, assert_complete_and_clean, job_finished, last_job, running_attempt

from shardprep.runtime.run_folder import RunFolder

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]
NO_WAIT = tuple(o for o in SLURM_TEST_CLUSTER if o != "wait=true")
# 24 items of 1 s each, one per batch: a task runs long enough to be hit mid-shard.
SLOW_SHARD = ("shards=1", "dataset.frames_per_sequence=12", "stage.seconds_per_item=1.0", "stage.batch_size=1")


def main_nodes() -> list[str]:
    return subprocess.run(["sinfo", "-h", "-N", "-p", "main", "-o", "%N"], capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.fixture(scope="module", autouse=True)
def several_nodes(slurm: None) -> None:
    """Several nodes, as tests/slurm/start-cluster.sh brings up: one to lose and others to go on."""
    nodes = main_nodes()
    if len(nodes) < 3:
        message = (f"these tests need the 3-node cluster of tests/slurm/start-cluster.sh; this one has {nodes}: "
                   "run the script (as root)")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def spare_nodes() -> str:
    """`cluster.exclude=` the first node, which SLURM fills first: a killed or preempted node then holds the test's
    task, not the jobs of whatever else uses the cluster meanwhile."""
    return f"cluster.exclude={main_nodes()[0]}"


def scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def restore_cluster() -> None:
    """Restart what a test killed and resume the nodes it took down or drained."""
    subprocess.run(["bash", str(REPO / "tests/slurm/start-cluster.sh")], check=True, timeout=180)


def runs_of(task: str) -> list[tuple[str, str]]:
    """(state, node) of every run of an array task, oldest first (sacct --duplicates)."""
    shown = subprocess.run(["sacct", "-n", "-P", "-X", "--duplicates", "--format=JobID,State,NodeList", "-j", task],
                           capture_output=True, text=True, check=True).stdout
    return [(state.split()[0], node) for job, state, node in (line.split("|") for line in shown.splitlines())
            if job == task]


def kill_node(node: str) -> None:
    """What a node failure does: its slurmd and every process of its jobs die at once; then the node is DOWN (SLURM
    marks it so itself after SlurmdTimeout without an answer; here at once, to keep the test short)."""
    pid_file = re.search(r"^SlurmdPidFile\s*=\s*(\S+)", scontrol("show", "config"), re.MULTILINE).group(1)
    victims = {int(Path(pid_file.replace("%n", node)).read_text())}
    jobs = set(subprocess.run(["squeue", "-h", "-w", node, "-o", "%A"], capture_output=True, text=True,
                              check=True).stdout.split())
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environ = set((proc / "environ").read_bytes().split(b"\0"))
        except (OSError, ValueError):
            continue
        if any(command[0].startswith(f"slurmstepd: [{job}.".encode()) for job in jobs) or (
                f"SLURMD_NODENAME={node}".encode() in environ
                and any(f"SLURM_JOB_ID={job}".encode() in environ for job in jobs)):
            victims.add(int(proc.name))
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    scontrol("update", f"nodename={node}", "state=down", "reason=node lost (test)")


def written(run_dir: Path) -> dict[str, int]:
    """mtime_ns of every checkpoint in place now (a writer's temporary file is not one)."""
    return {name: path.stat().st_mtime_ns for name, path in all_files(run_dir).items() if not name.startswith(".tmp-")}


def assert_resumed_with_only_in_flight_items_redone(run_dir: Path, before: dict[str, int], items: int) -> None:
    """The files written before the fault are untouched; the last attempt found them valid and did only the rest."""
    assert_complete_and_clean(run_dir, items)
    after = all_files(run_dir)
    assert {name: after[name].stat().st_mtime_ns for name in before} == before
    last = RunFolder(run_dir).progress(0).attempts[-1]
    assert last.state == "finished" and last.valid_at_start >= len(before)
    assert last.todo == last.processed == items - last.valid_at_start


def test_array_over_the_nodes_merges_to_the_bytes_of_a_one_shard_local_run(tmp_path: Path) -> None:
    overrides = ["stage=image_stats", *MAKERS["h36m"](tmp_path / "h36m", frames=4)]
    local, spread = tmp_path / "local", tmp_path / "spread"
    launch("run.py", *overrides, "shards=1", "cluster=local", f"out_dir={local}")
    launch("merge.py", *overrides, f"out_dir={local}")
    launch("run.py", *overrides, "shards=6", f"out_dir={spread}", *SLURM_TEST_CLUSTER)
    launch("merge.py", *overrides, f"out_dir={spread}")
    script, = (spread / "logs").rglob("*_submission.sh")
    assert "#SBATCH --requeue" in script.read_text()  # requeued on preemption or node failure whatever JobRequeue says
    nodes = {RunFolder(spread).progress(shard).attempts[-1].host for shard in range(6)}
    assert len(nodes) >= 2, nodes  # the tasks ran on several nodes, each reading and writing the shared folder
    names = sorted(p.name for p in (local / "merged").iterdir() if not p.name.startswith("."))
    assert names and names == sorted(p.name for p in (spread / "merged").iterdir() if not p.name.startswith("."))
    for name in names:
        assert (local / "merged" / name).read_bytes() == (spread / "merged" / name).read_bytes(), name


def test_a_lost_node_s_task_is_requeued_on_another_node_losing_only_items_in_flight(tmp_path: Path,
                                                                                    demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    launch("run.py", *SLOW_SHARD, spare_nodes(), f"out_dir={run_dir}", *NO_WAIT, demo_root=demo_root)
    job, task = last_job(run_dir), RunFolder(run_dir).submissions()[-1]["tasks"]["0"]
    try:
        node = running_attempt(run_dir, 0, min_files=3).host
        kill_node(node)
        before = written(run_dir)
        wait_until(lambda: job_finished(job), 300, f"job {job} to leave the queue")
    finally:
        subprocess.run(["scancel", job], check=False)
        restore_cluster()
    assert_resumed_with_only_in_flight_items_redone(run_dir, before, 24)
    runs = runs_of(task)
    assert runs[0] == ("NODE_FAIL", node) and runs[-1][0] == "COMPLETED" and runs[-1][1] != node, runs
    attempts = RunFolder(run_dir).progress(0).attempts
    assert attempts[0].host == node and attempts[-1].host != node and attempts[-1].restart_count >= 1
    status = json.loads(launch("status.py", f"out_dir={run_dir}", "output=json").stdout)["shards"][0]
    assert status["requeued_after"][0] == "NODE_FAIL" and status["requeues"] >= 1 and status["todo"] == 0


def test_a_preempted_task_is_requeued_and_resumes_from_its_checkpoints(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    launch("run.py", *SLOW_SHARD, "cluster.partition=low", spare_nodes(), f"out_dir={run_dir}", *NO_WAIT,
           demo_root=demo_root)
    job, task = last_job(run_dir), RunFolder(run_dir).submissions()[-1]["tasks"]["0"]
    urgent = ""
    try:
        node = running_attempt(run_dir, 0, min_files=3).host
        # A job of the high-priority partition, which takes whole nodes: it needs the task's node now.
        urgent = subprocess.run(["sbatch", "--parsable", "-p", "high", "-w", node, "--mem=1G", "-o", "/dev/null",
                                 "--wrap", "sleep 20"], capture_output=True, text=True, check=True).stdout.strip()
        wait_until(lambda: runs_of(task)[:1] == [("PREEMPTED", node)], 120, f"task {task} to be preempted")
        # GraceTime: the task went on writing until SLURM killed it; what it wrote by then is kept.
        before = written(run_dir)
        wait_until(lambda: job_finished(job), 300, f"job {job} to leave the queue")
    finally:
        subprocess.run(["scancel", job, *([urgent] if urgent else [])], check=False)
    assert_resumed_with_only_in_flight_items_redone(run_dir, before, 24)
    runs = runs_of(task)
    assert [state for state, _ in runs] == ["PREEMPTED", "COMPLETED"], runs
    assert RunFolder(run_dir).progress(0).attempts[-1].restart_count == 1
    status = json.loads(launch("status.py", f"out_dir={run_dir}", "output=json").stdout)["shards"][0]
    assert status["requeued_after"] == ["PREEMPTED"] and status["requeues"] == 1 and status["state"] == "COMPLETED"
    assert "1 (PREEMPTED)" in launch("status.py", f"out_dir={run_dir}").stdout


def test_drained_nodes_finish_their_tasks_and_the_chained_merge_runs_on_another_node(tmp_path: Path) -> None:
    overrides = ["stage=image_stats", *MAKERS["h36m"](tmp_path / "h36m", frames=4), "stage.seconds_per_item=2.0",
                 "stage.batch_size=1", "shards=2"]
    run_dir = tmp_path / "run"
    launch("run.py", *overrides, f"out_dir={run_dir}", "merge_after=true", "workers=1", *NO_WAIT)
    job = last_job(run_dir)
    merge = RunFolder(run_dir).submissions()[-1]
    assert merge["kind"] == "merge"
    try:
        nodes = {running_attempt(run_dir, shard, min_files=1).host for shard in (0, 1)}
        scontrol("update", f"nodename={','.join(sorted(nodes))}", "state=drain", "reason=maintenance (test)")
        wait_until(lambda: job_finished(merge["job_id"]), 300, f"merge job {merge['job_id']} to leave the queue")
        drained = subprocess.run(["sinfo", "-h", "-N", "-p", "main", "-t", "drained", "-o", "%N"],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert nodes <= set(drained)  # the drain held while the tasks finished
    finally:
        subprocess.run(["scancel", job, merge["job_id"]], check=False)
        restore_cluster()
    items = sum(RunFolder(run_dir).progress(shard).attempts[-1].items for shard in (0, 1))
    assert_complete_and_clean(run_dir, items)
    for shard in (0, 1):  # the tasks were not moved: one attempt each, on the node it started on
        attempts = RunFolder(run_dir).progress(shard).attempts
        assert len(attempts) == 1 and attempts[0].host in nodes and attempts[0].state == "finished"
    (merge_state, merge_node), = runs_of(merge["job_id"])
    assert merge_state == "COMPLETED" and merge_node not in nodes, (merge_node, nodes)
    assert sorted(p.name for p in (run_dir / "merged").iterdir() if not p.name.startswith(".")) == [
        "h36m_stats_test.npz", "h36m_stats_train.npz"]
