"""The run folder: the one object through which everything reads and writes a run's state on disk.

Launcher, array tasks, status, resubmit, every merge and the stages that read another run's outputs go through a
`RunFolder`, so each file has one owner and one format:

    manifest.json            resolved config, plan, fingerprint        written by a launch, only once its submit succeeded
    submissions.jsonl        one line per array (and chained merge)    appended by the launch after sbatch answered
    .lock                    held while a launch checks and submits    (and for the whole wait of a local launch)
    checkpoints/shard-N/     one file per item and output              the shard's task (ShardStore)
    errors/shard-N.jsonl     failed attempts                           the shard's task
    progress/shard-N.json    one entry per attempt at the shard        the shard's task
    progress/shard-N.valid.npz   validation cache of the shard folder  the shard's task
    logs/                    submitit's stdout/stderr per task         submitit
    merged/                  training files                            the merge (merge/folder.py)

Metadata is written temp + fsync + rename; a reader that meets an empty or torn file (a crash of a version that did
not fsync, a full disk, a hand edit) says so in one line and falls back to what the checkpoints themselves say.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardprep.runtime.atomic import append_line, write_json
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.manifest import Manifest, items_digest
from shardprep.runtime.outputs import Output
from shardprep.runtime.progress import ShardProgress
from shardprep.runtime.store import ShardStore, shard_name

if TYPE_CHECKING:
    from shardprep.datasets.base import Dataset, Item

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUBMISSIONS = "submissions.jsonl"
LOCK = ".lock"

# Manifests planned by this process but not written yet (launch/pipeline.py prepares every stage before it submits
# the first, and a later stage's checks read an earlier one's plan): run folder -> its planned manifest.
_planned: contextvars.ContextVar[Mapping[Path, Manifest]] = contextvars.ContextVar("planned_runs", default={})


@contextlib.contextmanager
def planned_runs(manifests: Mapping[Path, Manifest]) -> Iterator[None]:
    """While inside, `RunFolder(path).manifest()` of these folders answers with the planned manifest."""
    token = _planned.set({**_planned.get(), **{Path(path).resolve(): m for path, m in manifests.items()}})
    try:
        yield
    finally:
        _planned.reset(token)


class UnreadableManifest(ConfigError):
    """manifest.json exists but cannot be parsed (empty or torn)."""


@dataclass(frozen=True)
class LiveTasks:
    """Tasks of this run that are pending or running now, and where that was learnt."""

    job_id: str
    states: dict[str, str]  # task -> state (with SLURM's reason for pending ones)

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for state in self.states.values():
            counts[state.split()[0]] = counts.get(state.split()[0], 0) + 1
        return ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        text = str(path).strip()
        if not text:
            raise ConfigError("out_dir is empty (an unset variable?): set out_dir=<folder for this run>")
        self.path = Path(text).expanduser().resolve()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- layout ------------------------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def submissions_path(self) -> Path:
        return self.path / SUBMISSIONS

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def shard_folder(self, shard: int) -> Path:
        return self.checkpoints / shard_name(shard)

    def error_log(self, shard: int) -> Path:
        return self.path / "errors" / f"{shard_name(shard)}.jsonl"

    def progress_path(self, shard: int) -> Path:
        return self.path / "progress" / f"{shard_name(shard)}.json"

    def validation_cache(self, shard: int) -> Path:
        return self.path / "progress" / f"{shard_name(shard)}.valid.npz"

    # -- the manifest ------------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path in _planned.get() or self.manifest_path.is_file()

    def manifest(self) -> Manifest:
        """The run's manifest. `ConfigError` in one line when there is no run, or its manifest is unreadable."""
        planned = _planned.get().get(self.path)
        if planned is not None:
            return planned
        try:
            text = self.manifest_path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"no run at {self.path} ({MANIFEST} missing): launch the stage first") from None
        try:
            return Manifest.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError) as error:
            what = "empty" if not text.strip() else f"unreadable ({type(error).__name__})"
            raise UnreadableManifest(
                f"{self.manifest_path} is {what}, left by a crash or a full disk: run the launch command again "
                "(it plans the run anew; checkpoints of the same settings are kept, each carries the fingerprint)"
            ) from None

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.manifest_path, manifest.as_dict())

    def restore_manifest(self, previous: bytes | None) -> None:
        """Put back the manifest as it was before a launch whose submission failed (or remove a new one)."""
        if previous is None:
            self.manifest_path.unlink(missing_ok=True)
        else:
            write_json(self.manifest_path, json.loads(previous))

    def manifest_bytes(self) -> bytes | None:
        try:
            raw = self.manifest_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            json.loads(raw)
        except ValueError:
            return None  # a torn manifest is not worth restoring
        return raw

    # -- the item list -----------------------------------------------------------------------------------------------
    def checked_items(self, manifest: Manifest, dataset: Dataset | None = None) -> tuple[Dataset, list[Item]]:
        """The dataset of the run and its items, refused when they are no longer the ones the run was planned for."""
        from shardprep.runtime.build import build_dataset

        dataset = dataset if dataset is not None else build_dataset(manifest.config)
        items = dataset.items()
        if items_digest(items) != manifest.items_digest:
            raise ConfigError(
                f"the items of dataset {dataset.name!r} changed since the run in {self.path} was planned "
                f"({manifest.item_count} items then, {len(items)} now: annotation files, frames or settings): point the "
                "dataset back at what the run was made from, or use a new out_dir"
            )
        return dataset, items

    # -- shards ------------------------------------------------------------------------------------------------------
    def store(self, manifest: Manifest, shard: int, outputs: Sequence[Output]) -> ShardStore:
        """The store of one shard of the run `manifest` describes."""
        return self.shard_store(shard, outputs, manifest.fingerprint, manifest.fingerprint_since,
                                manifest.attempts_since)

    def shard_store(self, shard: int, outputs: Sequence[Output], fingerprint: str, valid_since: float = 0.0,
                    attempts_since: float = 0.0) -> ShardStore:
        return ShardStore(self.shard_folder(shard), self.error_log(shard), self.validation_cache(shard), outputs,
                          fingerprint, valid_since, attempts_since)

    def stores(self, manifest: Manifest, outputs: Sequence[Output]) -> list[ShardStore]:
        return [self.store(manifest, shard, outputs) for shard in range(manifest.shards)]

    def valid_files(self, manifest: Manifest, outputs: Sequence[Output]) -> list[frozenset[str]]:
        """Per shard, the names of its valid checkpoint files (read-only, through the validation cache)."""
        return [store.check_folder().valid for store in self.stores(manifest, outputs)]

    def progress(self, shard: int) -> ShardProgress:
        return ShardProgress.load(self.progress_path(shard), shard)

    def shard_of_items(self, manifest: Manifest, items: Sequence[Item]) -> dict[str, int]:
        return {item.id: shard for shard, (start, end) in enumerate(manifest.plan) for item in items[start:end]}

    # -- submissions -------------------------------------------------------------------------------------------------
    def record_submission(self, job_id: str, tasks: Sequence[tuple[int, str]], backend: str, kind: str = "array",
                          cluster: Mapping[str, Any] | None = None) -> None:
        """Append one submission: its job id and, per shard, the scheduler's id of that shard's task."""
        import time

        line = {
            "job_id": job_id,
            "kind": kind,
            "shards": [shard for shard, _ in tasks],
            "tasks": {str(shard): task for shard, task in tasks},
            "backend": backend,
            "host": socket.gethostname(),
            "time": time.time(),
        }
        if cluster is not None:
            line["cluster"] = dict(cluster)
        append_line(self.submissions_path, json.dumps(line, sort_keys=True))

    def submissions(self) -> list[dict[str, Any]]:
        """Every submission recorded, oldest first. A torn line (a crash mid-append) is skipped with a warning."""
        try:
            text = self.submissions_path.read_text()
        except FileNotFoundError:
            return []
        found = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entry.setdefault("kind", "array")
                entry.setdefault("tasks", {})
                found.append(entry)
            except ValueError:
                log.warning("%s line %d is torn (a crash mid-append): skipped", self.submissions_path, number)
        return found

    # -- one writer at a time ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock: one launch (check, write manifest, submit) at a time. Refuses at once when taken.

        A folder that the lock itself created is removed again if nothing else was written into it (a refused first
        launch leaves no trace)."""
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / LOCK
        handle = open(path, "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigError(f"another launch holds {self.path} ({holder}): wait for it to finish, or stop it "
                                  "(Ctrl-C), then run this command again") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # releases the lock
            if created and os.listdir(self.path) == [LOCK]:
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.path.rmdir()

    def live_tasks(self) -> LiveTasks | None:
        """The newest array of this run whose tasks are still pending or running, if any (SLURM's queue, or the
        processes of a local run on this host)."""
        from shardprep.runtime.scheduler import queued_tasks

        arrays = [s for s in self.submissions() if s["kind"] == "array"]
        slurm = [s["job_id"] for s in arrays if s["backend"] == "slurm"]
        queued = queued_tasks(slurm) if slurm else {}
        for submission in reversed(arrays):
            if submission["backend"] == "slurm":
                states = {task: queued[task] for task in queued if task.split("_")[0] == submission["job_id"]}
                if states:
                    return LiveTasks(submission["job_id"], states)
        return None


def pid_alive(host: str, pid: int) -> bool | None:
    """Whether process `pid` of `host` runs; None when `host` is another machine (cannot tell from here)."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
