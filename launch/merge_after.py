"""`merge_after=true`: the merge submitted with the array, to run once every array task succeeded.

The merge itself (merge/) only reads checkpoints and writes training files; submitting it as a SLURM job chained
`afterok` to the array is the launcher's business, so it lives here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit

from shardprep.merge.job import load_merge, run_merge, write_merged
from shardprep.runtime.config import positive_int
from shardprep.runtime.executor import make_executor
from shardprep.runtime.run import job_name
from shardprep.runtime.run_folder import RunFolder


class MergeTask:
    """The merge as a submitit job: the same command line, with the run's folders made absolute."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)

    def __call__(self) -> list[str]:
        return [str(path) for path in run_merge(self.argv)]


def submit_after(config: dict[str, Any], run_dir: Path, kind: str, task: Any, after: str | None,
                 says: str) -> submitit.Job:
    """Queue `task` as one small CPU job of the run in `run_dir`, to start once job `after` succeeded (at once
    without one); recorded in the run's submissions as `kind`, its log under the run's logs. `says` what it does."""
    # The stage's task size bounds the job's: asking a small node for `workers` CPUs would never start.
    cpus = min(positive_int(config, "workers"), int(config["cluster"]["cpus_per_task"]))
    cluster = {**config["cluster"], "gpus_per_task": 0, "cpus_per_task": cpus}
    folder = RunFolder(run_dir)
    executor = make_executor(cluster, "slurm", folder.logs, job_name(config, kind), after=after)
    job = executor.submit(task)
    folder.record_submission(job.job_id, [], "slurm", kind=kind, cluster=cluster)
    when = f"starts after job {after} succeeds" if after else "starts now"
    print(f"submitted {kind} job {job.job_id}: {says}, {when}; log: {job.paths.stdout} "
          f"(stderr: {job.paths.stderr.name})")
    return job


def wait_job(job: submitit.Job, kind: str) -> tuple[int, Any]:
    """Wait for a job of `submit_after`: (0, its result), or (1, None) with its error's last line said."""
    try:
        return 0, job.result()
    except Exception as error:  # submitit wraps the job's exception; its last line says what went wrong
        lines = [line for line in str(error).splitlines() if line.strip()]
        print(f"{kind} job {job.job_id} failed: {lines[-1] if lines else error}; log: {job.paths.stderr}",
              file=sys.stderr)
        return 1, None


class MergeAfter:
    """`merge_after=true` on a stage launch. Built before submission, so a bad merge config submits nothing.

    SLURM: the merge is submitted right after the array, to start only if every array task succeeded (`afterok`;
    cancelled if one fails). Local/debug: it runs in this process once the shards are done.
    """

    def __init__(self, config: dict[str, Any], argv: Sequence[str], run_dir: Path) -> None:
        self.merged_dir = Path(config["merged_dir"]).expanduser().resolve()
        self.config = config
        self.run_dir = run_dir
        self.argv = [*argv, f"out_dir={run_dir}", f"merged_dir={self.merged_dir}"]
        self.merger, self.job = load_merge(self.argv)

    def run_here(self) -> None:
        for path in write_merged(self.merger, self.job):
            print(f"merged: {path}")

    def submit(self, after: str | None) -> submitit.Job:
        """Queue the merge behind job `after` (the run's array); recorded in the run's submissions as kind `merge`."""
        return submit_after(self.config, self.run_dir, "merge", MergeTask(self.argv), after,
                            f"merges {self.run_dir} into {self.merged_dir}")

    def wait(self, job: submitit.Job) -> int:
        code, paths = wait_job(job, "merge")
        for path in paths or []:
            print(f"merged: {path}")
        return code
