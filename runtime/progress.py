"""Per-shard progress record, `progress/shard-NNNNN.json`, rewritten atomically as a task goes.

It is what `status` reads besides the files themselves, and it keeps one entry per attempt at the shard (first run,
requeue after a time limit, re-run after a kill) with how much that attempt found done and how much it did.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shardprep.runtime.atomic import write_json
from shardprep.runtime.store import shard_name


def current_job() -> str:
    """The SLURM array task running this code (`<array job>_<task>`), the plain job id, or `local-<pid>`."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID", f"local-{os.getpid()}")


@dataclass
class Attempt:
    job: str
    host: str
    pid: int
    started: float
    restart_count: int
    items: int
    valid_at_start: int
    invalid_at_start: int
    todo: int
    processed: int = 0
    failed: int = 0
    state: str = "running"
    updated: float = 0.0


@dataclass
class ShardProgress:
    shard: int
    attempts: list[Attempt] = field(default_factory=list)

    @staticmethod
    def path(run_dir: Path, shard: int) -> Path:
        return run_dir / "progress" / f"{shard_name(shard)}.json"

    @classmethod
    def load(cls, run_dir: Path, shard: int) -> ShardProgress:
        path = cls.path(run_dir, shard)
        if not path.exists():
            return cls(shard)
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(shard, [Attempt(**attempt) for attempt in data["attempts"]])

    def start(self, items: int, valid: int, invalid: int, todo: int) -> Attempt:
        attempt = Attempt(
            job=current_job(),
            host=socket.gethostname(),
            pid=os.getpid(),
            started=time.time(),
            restart_count=int(os.environ.get("SLURM_RESTART_COUNT", 0)),
            items=items,
            valid_at_start=valid,
            invalid_at_start=invalid,
            todo=todo,
        )
        self.attempts.append(attempt)
        return attempt

    def save(self, run_dir: Path) -> None:
        if self.attempts:
            self.attempts[-1].updated = time.time()
        write_json(self.path(run_dir, self.shard), {"shard": self.shard, "attempts": [asdict(a) for a in self.attempts]})
