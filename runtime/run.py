"""Prepare a run folder and submit its shards: everything that must hold before anything is submitted.

Order matters: every check that can fail (config, data, models, out_dir, an existing run's fingerprint and shard
count, the cluster's array limit) runs before the first job is submitted, and the manifest is written only then.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from shardprep.runtime.build import build_dataset, build_stage
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.executor import check_array_size, make_executor, resolve_backend, submit_array
from shardprep.runtime.manifest import MANIFEST, Manifest, code_version, fingerprint, items_digest, record_submission
from shardprep.runtime.config import positive_int
from shardprep.runtime.sharding import plan_shards
from shardprep.runtime.task import ShardTask


@dataclass
class Submission:
    run_dir: Path
    backend: str
    job_id: str
    shards: list[int]
    jobs: list[submitit.Job]


def prepare(config: dict[str, Any]) -> tuple[Path, Manifest]:
    """Validate everything and write (or confirm) the run's manifest. Raises `ConfigError` on any problem."""
    shards = positive_int(config, "shards")
    positive_int(config, "max_attempts")
    resolve_backend(config["cluster"])
    dataset = build_dataset(config)
    dataset.validate()
    items = dataset.items()
    if not items:
        raise ConfigError(f"dataset {dataset.name!r} has no items: check its root and annotation files")
    duplicates = len(items) - len({item.id for item in items})
    if duplicates:
        raise ConfigError(f"dataset {dataset.name!r} has {duplicates} duplicate item ids: fix the adapter's id rule")
    plan = plan_shards(items, shards)
    stage = build_stage(config)
    stage.validate()
    digest = items_digest(items)
    run_fingerprint = fingerprint(config["stage"], [*stage.fingerprint_files(), *dataset.fingerprint_files()], digest,
                                  stage.upstream_fingerprints())
    run_dir = Path(config["out_dir"]).expanduser().resolve()
    _check_writable(run_dir)
    manifest = Manifest(config, plan, len(items), digest, run_fingerprint, code_version())
    if (run_dir / MANIFEST).exists():
        old = _check_resumable(run_dir, manifest, force=bool(config["force"]))
        manifest.created = old.created
        if old.fingerprint == manifest.fingerprint:
            manifest.fingerprint_since = old.fingerprint_since
    manifest.save(run_dir)
    return run_dir, manifest


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".tmp-probe-"):
            pass
    except OSError as error:
        raise ConfigError(f"out_dir={run_dir} is not writable ({error.strerror}): choose another out_dir") from None


def _check_resumable(run_dir: Path, new: Manifest, force: bool) -> Manifest:
    """Refuse to mix a run with outputs made under other settings; return the existing run's manifest."""
    old = Manifest.load(run_dir)
    if old.shards != new.shards:
        raise ConfigError(
            f"{run_dir} was planned with shards={old.shards}; its checkpoints are laid out per shard, so the count "
            f"cannot change: run again with shards={old.shards}, or use a new out_dir"
        )
    if old.items_digest != new.items_digest:
        raise ConfigError(
            f"{run_dir} was planned for another item list ({old.item_count} items, now {new.item_count}): "
            "use a new out_dir"
        )
    if old.fingerprint != new.fingerprint and not force:
        raise ConfigError(
            f"{run_dir} holds a run with fingerprint {old.fingerprint}, this config gives {new.fingerprint} (stage "
            "config, model files, annotations or an upstream run changed): use a new out_dir, or force=true to redo its "
            "items"
        )
    return old


def submit(config: dict[str, Any], run_dir: Path, manifest: Manifest, shards: Sequence[int] | None = None,
           after: str | None = None) -> Submission:
    """Submit `shards` (all by default) of the run as one array job; on SLURM, `after` is a job id the array waits
    for (`afterok`: it starts once that job succeeded, and is cancelled if it failed)."""
    cluster = config["cluster"]
    backend = resolve_backend(cluster)
    todo = list(range(manifest.shards)) if shards is None else list(shards)
    if backend == "slurm":
        check_array_size(len(todo))
    name = f"shardprep-{config['dataset']['name']}-{config['stage']['name']}"
    executor = make_executor(cluster, backend, run_dir / "logs", name, after)
    jobs = submit_array(executor, ShardTask(run_dir), todo)
    job_id = jobs[0].job_id.split("_")[0] if backend == "slurm" else jobs[0].job_id
    record_submission(run_dir, job_id, [(shard, job.job_id) for shard, job in zip(todo, jobs)], backend)
    return Submission(run_dir, backend, job_id, todo, jobs)


def wait(submission: Submission) -> list[str]:
    """Wait for every task; one line per task that raised."""
    failures = []
    for shard, job in zip(submission.shards, submission.jobs):
        try:
            job.result()
        except Exception as error:  # submitit wraps the task's exception; report it, keep waiting for the rest
            last = [line for line in str(error).splitlines() if line.strip()]
            failures.append(f"shard {shard} (job {job.job_id}): {last[-1] if last else error}")
    return failures
