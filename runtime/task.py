"""The callable that submitit pickles and runs as each array task.

It is `Checkpointable`: when SLURM signals that the time limit is near, or preempts the task, submitit calls
`checkpoint`, which requeues this same array task with the same shard. No state needs saving, because the worker
resumes from the checkpoints on disk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import submitit

from shardprep.runtime.worker import ShardReport, run_shard


class ShardTask(submitit.helpers.Checkpointable):
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def __call__(self, shard: int) -> ShardReport:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run_shard(self.run_dir, shard)
