"""What SLURM says about jobs and nodes: queue states with their reasons, final states, partition limits.

Every query answers "don't know" (empty) where the command is missing or fails, so status and the launch checks work
the same on a machine without SLURM. Submission itself is runtime/executor.py.
"""

from __future__ import annotations

import getpass
import subprocess
import time
from collections.abc import Iterable

TIMEOUT_S = 30
# Queue states in which a task may still run (and write into its run folder).
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "STOPPED",
          "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED")


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def queued_tasks(job_ids: Iterable[str]) -> dict[str, str]:
    """`<job>_<index>` (or `<job>`) -> "STATE" or "PENDING (Reason)" for the tasks of these jobs still in the queue.

    One `squeue` of the user's jobs, filtered here: asking for job ids that have left the queue makes squeue fail.
    """
    wanted = {str(job) for job in job_ids}
    if not wanted:
        return {}
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        return {}
    shown = _run(["squeue", "-h", "-r", "-u", user, "-o", "%F|%i|%T|%r"])
    if shown is None:
        return {}
    tasks = {}
    for line in shown.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4 or parts[0] not in wanted:
            continue
        _, task, state, reason = parts
        if state not in ACTIVE:
            continue
        tasks[task] = f"{state} ({reason})" if state == "PENDING" and reason not in ("", "None") else state
    return tasks


def wait_until_unqueued(job_ids: Iterable[str], timeout_s: float, interval_s: float = 0.5) -> bool:
    """Poll the queue until none of these jobs' tasks is listed, at most `timeout_s`; whether they left it."""
    jobs, deadline = list(job_ids), time.monotonic() + timeout_s
    while queued_tasks(jobs):
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True


def final_states(job_ids: Iterable[str]) -> dict[str, str]:
    """`<job>_<index>` (or `<job>`) -> SLURM state from accounting; empty where sacct does not answer."""
    wanted = sorted({str(job) for job in job_ids})
    if not wanted:
        return {}
    shown = _run(["sacct", "-n", "-P", "-X", "--format=JobID,State", "-j", ",".join(wanted)])
    states = {}
    for line in (shown or "").splitlines():
        job, _, state = line.partition("|")
        if "[" not in job:  # "<job>_[3-9]" rows are tasks not started yet
            states[job] = state.split()[0] if state else ""
    return states


def earlier_runs(job_ids: Iterable[str]) -> dict[str, list[str]]:
    """`<job>_<index>` (or `<job>`) -> how each run of it before the last one ended, oldest first, for the tasks that
    SLURM ran more than once: PREEMPTED, NODE_FAIL (both requeued by SLURM itself), REQUEUED (asked by the task, e.g.
    at its time limit). From accounting (`sacct --duplicates`); empty where sacct does not answer."""
    wanted = sorted({str(job) for job in job_ids})
    if not wanted:
        return {}
    shown = _run(["sacct", "-n", "-P", "-X", "--duplicates", "--format=JobID,State", "-j", ",".join(wanted)])
    runs: dict[str, list[str]] = {}
    for line in (shown or "").splitlines():
        job, _, state = line.partition("|")
        if "[" not in job and state:
            runs.setdefault(job, []).append(state.split()[0])
    return {job: states[:-1] for job, states in runs.items() if len(states) > 1}


def partition_limits(partition: str | None) -> str:
    """What the nodes of `partition` (default partition when None) have, for a refusal message; "" if unknown."""
    command = ["sinfo", "-h", "-o", "%P %D %c %m %G %l"]
    if partition:
        command += ["-p", partition]
    shown = _run(command)
    if not shown:
        return ""
    rows = []
    for line in shown.splitlines():
        name, nodes, cpus, memory, gres, limit = (line.split() + [""] * 6)[:6]
        rows.append(f"{name}: {nodes} node(s) of {cpus} CPUs, {memory} MB, gres {gres}, time limit {limit}")
    return "; ".join(rows)
