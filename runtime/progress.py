"""Per-shard progress record, `progress/shard-NNNNN.json`, rewritten atomically as a task goes.

It is what `status` reads besides the files themselves, and it keeps one entry per attempt at the shard (first run,
requeue after a time limit, re-run after a kill) with how much that attempt found done and how much it did.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shardprep.runtime.atomic import write_json

log = logging.getLogger(__name__)


def current_node() -> str:
    """The node running this code: SLURM's name for it where SLURM runs it (several nodes can share a host name, and
    a requeued task may land on another node), else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def current_job() -> str:
    """The SLURM array task running this code (`<array job>_<task>`), the plain job id, or `local-<pid>`."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID", f"local-{os.getpid()}")


@dataclass
class Attempt:
    job: str
    host: str  # the node (current_node): where a requeued task ran each time
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
    # Stage.environment() of the process (device model, driver, library versions): what made this attempt's files.
    environment: dict[str, str] = field(default_factory=dict)


@dataclass
class ShardProgress:
    """The attempts at one shard, kept in `path` (the run folder's `progress/shard-NNNNN.json`)."""

    shard: int
    path: Path
    attempts: list[Attempt] = field(default_factory=list)
    # Why the file on disk could not be read (empty or torn), if it could not: its history is lost, nothing else.
    unreadable: str = ""

    @classmethod
    def load(cls, path: Path, shard: int) -> ShardProgress:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(shard, path)
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(shard, path, [Attempt(**attempt) for attempt in data["attempts"]])
        except (ValueError, TypeError, KeyError) as error:
            # A crash can leave this file empty or torn. It is only history: the checkpoints say what is done.
            what = "empty" if not text.strip() else f"unreadable ({type(error).__name__})"
            log.warning("%s is %s: its attempt history is lost, the checkpoints still say what is done", path, what)
            return cls(shard, path, unreadable=what)

    def start(self, items: int, valid: int, invalid: int, todo: int) -> Attempt:
        attempt = Attempt(
            job=current_job(),
            host=current_node(),
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

    def save(self) -> None:
        if self.attempts:
            self.attempts[-1].updated = time.time()
        write_json(self.path, {"shard": self.shard, "attempts": [asdict(a) for a in self.attempts]})


def producing_environments(progresses: Iterable[ShardProgress]) -> list[dict[str, str]]:
    """The distinct environments of the attempts that wrote files, in order of first use."""
    found: list[dict[str, str]] = []
    for progress in progresses:
        for attempt in progress.attempts:
            # A killed attempt stays "running" on disk, its last count possibly unsaved: it may have written files.
            wrote = attempt.processed or attempt.state == "running"
            if wrote and attempt.environment and attempt.environment not in found:
                found.append(attempt.environment)
    return found
