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
from shardprep.runtime.run import Submission, job_name
from shardprep.runtime.run_folder import RunFolder


class MergeTask:
    """The merge as a submitit job: the same command line, with the run's folders made absolute."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)

    def __call__(self) -> list[str]:
        return [str(path) for path in run_merge(self.argv)]


class MergeAfter:
    """`merge_after=true` on a stage launch. Built before submission, so a bad merge config submits nothing.

    SLURM: the merge is submitted right after the array, to start only if every array task succeeded (`afterok`;
    cancelled if one fails). Local/debug: it runs in this process once the shards are done.
    """

    def __init__(self, config: dict[str, Any], argv: Sequence[str], run_dir: Path) -> None:
        merged_dir = Path(config["merged_dir"]).expanduser().resolve()
        self.config = config
        self.argv = [*argv, f"out_dir={run_dir}", f"merged_dir={merged_dir}"]
        self.merger, self.job = load_merge(self.argv)

    def run_here(self) -> None:
        for path in write_merged(self.merger, self.job):
            print(f"merged: {path}")

    def submit(self, submission: Submission) -> submitit.Job:
        """Queue the merge behind `submission`'s array; recorded in the run's submissions as kind `merge`."""
        config = self.config
        # The stage's task size bounds the merge job's: asking a small node for `workers` CPUs would never start.
        cpus = min(positive_int(config, "workers"), int(config["cluster"]["cpus_per_task"]))
        cluster = {**config["cluster"], "gpus_per_task": 0, "cpus_per_task": cpus}
        folder = RunFolder(submission.run_dir)
        executor = make_executor(cluster, "slurm", folder.logs, job_name(config, "merge"), after=submission.job_id)
        job = executor.submit(MergeTask(self.argv))
        folder.record_submission(job.job_id, [], "slurm", kind="merge", cluster=cluster)
        print(f"submitted merge job {job.job_id}: starts after job {submission.job_id} succeeds; "
              f"log: {job.paths.stdout} (stderr: {job.paths.stderr.name})")
        return job

    def wait(self, job: submitit.Job) -> int:
        try:
            paths = job.result()
        except Exception as error:  # submitit wraps the job's exception; its last line says what went wrong
            lines = [line for line in str(error).splitlines() if line.strip()]
            print(f"merge job {job.job_id} failed: {lines[-1] if lines else error}; log: {job.paths.stderr}",
                  file=sys.stderr)
            return 1
        for path in paths:
            print(f"merged: {path}")
        return 0
