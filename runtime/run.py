"""Prepare a launch and submit its shards: everything that must hold before anything is submitted.

`prepare` checks everything that can be known before submission (config, data, models, out_dir, an existing run's
fingerprint and shard count, the cluster's array limit and whether SLURM could ever run the request) and writes
nothing. `submit`, called while holding the run folder's lock, refuses while an earlier array of the run is still
queued or running, writes the manifest, submits, and puts the manifest back as it was if the submission failed: a
refused or failed launch never pins a run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

from shardprep.runtime.build import build_dataset, build_stage
from shardprep.runtime.config import one_line, positive_int
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.executor import (
    check_array_size, check_cluster_settings, check_schedulable, make_executor, resolve_backend, submit_array,
)
from shardprep.runtime.fs_clock import filesystem_now
from shardprep.runtime.model_files import check_model_files
from shardprep.runtime.manifest import (
    Manifest, code_version, fingerprint, fingerprint_changes, fingerprint_inputs, items_digest,
)
from shardprep.runtime.run_folder import RunFolder, UnreadableManifest
from shardprep.runtime.scheduler import wait_until_unqueued
from shardprep.runtime.sharding import plan_shards
from shardprep.runtime.task import ShardTask

if TYPE_CHECKING:
    from shardprep.datasets.base import Dataset
    from shardprep.stages.base import Stage

# How long a waiting launch gives SLURM to drop the tasks that have returned (their processes exiting, the epilog).
QUEUE_EXIT_TIMEOUT_S = 120.0


@dataclass
class Launch:
    """A checked launch: the run folder, the manifest it will have once submitted, and notes for the user."""

    config: dict[str, Any]
    folder: RunFolder
    manifest: Manifest
    backend: str
    frames: list[int] = field(default_factory=list)  # per shard, the items' total weight (frames)
    notes: list[str] = field(default_factory=list)


@dataclass
class Submission:
    run_dir: Path
    backend: str
    job_id: str
    shards: list[int]
    jobs: list[submitit.Job]


def job_name(config: dict[str, Any], kind: str = "") -> str:
    return "-".join(part for part in ("shardprep", kind, config["dataset"]["name"], config["stage"]["name"]) if part)


def check_settings(config: dict[str, Any]) -> tuple[Dataset, Stage, str]:
    """What a launch checks without reading the dataset's files: counts, cluster settings (and, on SLURM, whether the
    request could ever run), stage and models, whether out_dir takes files. A chain whose later stage reads files an
    earlier one has not written yet checks that stage with this before anything is submitted."""
    shards = positive_int(config, "shards")
    positive_int(config, "max_attempts")
    folder = RunFolder(config["out_dir"])
    backend = resolve_backend(config["cluster"])
    check_cluster_settings(config["cluster"])
    dataset = build_dataset(config)
    stage = build_stage(config)
    check_payload(stage, dataset)
    stage.validate()
    check_model_files(stage.fingerprint_files())
    _check_writable(folder.path)
    if backend == "slurm":
        preflight(config, shards)
    return dataset, stage, backend


def prepare(config: dict[str, Any]) -> Launch:
    """Check everything and plan the run; nothing is written. Raises `ConfigError` on any problem."""
    dataset, stage, backend = check_settings(config)
    shards = positive_int(config, "shards")
    folder = RunFolder(config["out_dir"])
    dataset.validate()
    resolved = dataset.resolved_settings()
    config["dataset"].update(resolved)  # recorded in the manifest: tasks and merges read the same files
    items = dataset.items()
    if not items:
        raise ConfigError(f"dataset {dataset.name!r} has no items: check its root and annotation files")
    duplicates = len(items) - len({item.id for item in items})
    if duplicates:
        raise ConfigError(f"dataset {dataset.name!r} has {duplicates} duplicate item ids: fix the adapter's id rule")
    plan = plan_shards(items, shards, group=stage.batch_size if stage.fixed_batches else 1)
    digest = items_digest(items)
    inputs = fingerprint_inputs([*stage.fingerprint_files(), *dataset.fingerprint_files()],
                                stage.upstream_fingerprints())
    run_fingerprint = fingerprint(config["stage"], inputs, digest)
    manifest = Manifest(config, plan, len(items), digest, run_fingerprint, code_version(),
                        fingerprint_since=filesystem_now(folder.path), inputs=inputs)
    launch = Launch(config, folder, manifest, backend)
    launch.notes.extend(f"dataset {dataset.name}: {key}={value} (detected from the files; recorded in the manifest)"
                        for key, value in resolved.items())
    if folder.manifest_path.exists():
        try:
            old = folder.manifest()
        except UnreadableManifest as error:
            launch.notes.append(f"note: {error}; planned anew from this command")
            manifest.attempts_since = time.time()
        else:
            _resume(folder, old, manifest, force=bool(config["force"]), retry_failed=bool(config["retry_failed"]))
    launch.frames = [sum(max(1, item.weight) for item in items[start:end]) for start, end in manifest.plan]
    return launch


def check_payload(stage: Stage, dataset: Dataset) -> None:
    """Refuse a stage whose items need what the dataset does not give (`Stage.needs`, `Dataset.gives`)."""
    missing = sorted(set(stage.needs) - set(dataset.gives))
    if missing:
        raise ConfigError(f"stage {stage.name!r} needs items with {', '.join(missing)}, which dataset {dataset.name!r} "
                          f"does not give: choose a dataset that does (dataset=<name>)")


def preflight(config: dict[str, Any], tasks: int) -> None:
    """What SLURM would refuse or never run, asked before anything is written: MaxArraySize, then the whole request
    (`sbatch --test-only`: partition, QOS and account limits, node sizes)."""
    check_array_size(tasks)
    check_schedulable(config["cluster"], job_name(config), tasks)


def _check_writable(run_dir: Path) -> None:
    """The run folder, or the nearest folder above it that exists, takes new files (probed there, removed at once)."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"out_dir={run_dir}: {existing} is not a folder: choose another out_dir")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".tmp-probe-"):
            pass
    except OSError as error:
        raise ConfigError(f"out_dir={run_dir} is not writable ({error.strerror}): choose another out_dir") from None


def _resume(folder: RunFolder, old: Manifest, new: Manifest, force: bool, retry_failed: bool) -> None:
    """Refuse to mix a run with outputs made under other settings; carry over what the new manifest keeps."""
    if old.shards != new.shards:
        raise ConfigError(
            f"{folder.path} was planned with shards={old.shards}; its checkpoints are laid out per shard, so the count "
            f"cannot change: run again with shards={old.shards}, or use a new out_dir"
        )
    if old.items_digest != new.items_digest:
        raise ConfigError(
            f"{folder.path} was planned for another item list ({old.item_count} items, now {new.item_count}): "
            "use a new out_dir"
        )
    if old.fingerprint != new.fingerprint and not force:
        changes = fingerprint_changes(old, new)
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise ConfigError(
            f"{folder.path} holds a run with fingerprint {old.fingerprint}, this config gives {new.fingerprint}; "
            f"changed: {shown}. Use a new out_dir, or force=true to redo its items"
        )
    new.created = old.created
    if old.fingerprint == new.fingerprint:
        # The recorded plan stays: a planner that changed since, or item weights that did, never move items away
        # from the shard folder holding their checkpoints (force=true redoes every item, so it plans anew).
        new.plan = old.plan
        new.fingerprint_since = old.fingerprint_since
        new.attempts_since = time.time() if (force or retry_failed) else old.attempts_since
    else:  # forced onto new settings: old files are stale, and failures under the old ones do not count
        new.attempts_since = new.fingerprint_since


def submit(launch: Launch, shards: Sequence[int] | None = None, after: str | None = None) -> Submission:
    """Submit `shards` (all by default) as one array job; on SLURM, `after` is a job id the array waits for
    (`afterok`). Call while holding `launch.folder.lock()`."""
    folder, config, manifest = launch.folder, launch.config, launch.manifest
    live = folder.live_tasks()
    if live is not None:
        raise ConfigError(
            f"job {live.job_id} of {folder.path} is still in SLURM's queue ({live.describe()}); a second array would "
            f"process its items twice: wait for it (squeue -j {live.job_id}) or cancel it (scancel {live.job_id}), "
            "then run this command again"
        )
    todo = list(range(manifest.shards)) if shards is None else list(shards)
    previous = folder.manifest_bytes()
    logs_before = set(os.listdir(folder.logs)) if folder.logs.is_dir() else set()
    folder.write_manifest(manifest)
    executor = make_executor(config["cluster"], launch.backend, folder.logs, job_name(config), after)
    try:
        jobs = submit_array(executor, ShardTask(folder.path), todo)
    except Exception as error:  # sbatch refused (or submitit failed before it): leave the folder as it was
        folder.restore_manifest(previous)
        _remove_new_logs(folder, logs_before)
        raise ConfigError(f"the submission failed, nothing was queued and {folder.path} is as it was: "
                          f"{one_line(error)}") from None
    job_id = jobs[0].job_id.split("_")[0] if launch.backend == "slurm" else jobs[0].job_id
    folder.record_submission(job_id, [(shard, job.job_id) for shard, job in zip(todo, jobs)], launch.backend,
                             cluster=config["cluster"])
    return Submission(folder.path, launch.backend, job_id, todo, jobs)


def _remove_new_logs(folder: RunFolder, before: set[str]) -> None:
    """Remove what a failed submission left in the logs folder (submitit pickles its tasks before calling sbatch)."""
    from shardprep.runtime.atomic import remove

    if not folder.logs.is_dir():
        return
    for name in set(os.listdir(folder.logs)) - before:
        remove(folder.logs / name)
    if not before:
        folder.logs.rmdir()


def wait(submission: Submission) -> list[str]:
    """Wait for every task, and on SLURM for the array to leave the queue; one line per task that raised.

    submitit answers once a task has written its result, while SLURM still lists the task until its process has
    exited: a launch right after would be refused as running twice."""
    failures = []
    for shard, job in zip(submission.shards, submission.jobs):
        try:
            job.result()
        except Exception as error:  # submitit wraps the task's exception; report it, keep waiting for the rest
            last = [line for line in str(error).splitlines() if line.strip()]
            failures.append(f"shard {shard} (job {job.job_id}): {last[-1] if last else error}")
    if submission.backend == "slurm":
        wait_until_unqueued([submission.job_id], QUEUE_EXIT_TIMEOUT_S)
    return failures


def cancel(submission: Submission) -> None:
    """Stop the submission's tasks (a local launch interrupted by Ctrl-C: its processes would run on unseen)."""
    for job in submission.jobs:
        try:
            job.cancel(check=False)
        except Exception:  # already finished, or the backend cannot cancel (debug): nothing left to stop
            continue
