"""What a run folder says about its shards: items done and failed (from the files), SLURM state (from sacct).

Counting only lists each shard folder; it does not validate files (the tasks do that when they run). An item counts
as done when every output of the stage is present.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shardprep.runtime.atomic import is_temporary
from shardprep.runtime.build import build_dataset, build_stage
from shardprep.runtime.manifest import Manifest, submissions
from shardprep.runtime.progress import ShardProgress
from shardprep.runtime.store import ShardStore


@dataclass
class ShardStatus:
    shard: int
    items: int
    done: int
    failed: int
    todo: int
    job: str
    state: str
    requeues: int
    last_error: str


def shard_statuses(run_dir: Path) -> list[ShardStatus]:
    """One row per shard. Item ids come from the checkpoint and error files, so the dataset is not re-read."""
    manifest = Manifest.load(run_dir)
    outputs = build_stage(manifest.config).outputs
    jobs = _latest_jobs(run_dir)
    states = _sacct_states({job.split("_")[0] for job in jobs.values()})
    rows = []
    for shard, (start, end) in enumerate(manifest.plan):
        store = ShardStore.for_run(run_dir, manifest, shard, outputs)
        done_ids = _done_ids(store)
        errors = store.errors()
        failed_ids = {record.item for record in errors} - done_ids
        attempts = ShardProgress.load(run_dir, shard).attempts
        job = jobs.get(shard, "")
        rows.append(
            ShardStatus(
                shard=shard,
                items=end - start,
                done=len(done_ids),
                failed=len(failed_ids),
                todo=end - start - len(done_ids),
                job=job,
                state=states.get(job, attempts[-1].state if attempts else "not started"),
                requeues=max((attempt.restart_count for attempt in attempts), default=0),
                last_error=next((r.error for r in reversed(errors) if r.item in failed_ids), ""),
            )
        )
    return rows


def _done_ids(store: ShardStore) -> set[str]:
    suffixes = {f".{output.suffix}" for output in store.outputs.values()}
    present: dict[str, int] = {}
    for name in store.list_files():
        for suffix in suffixes:
            if name.endswith(suffix):
                present[name[: -len(suffix)]] = present.get(name[: -len(suffix)], 0) + 1
    return {item for item, count in present.items() if count == len(suffixes)}


def _latest_jobs(run_dir: Path) -> dict[int, str]:
    """Per shard, the SLURM job id of its task in the newest submission that included it (`<job>_<index>` for an
    array task; a plain id where submitit sent a single task as a plain job)."""
    latest: dict[int, str] = {}
    for submission in submissions(run_dir):
        if submission["backend"] == "slurm":
            # Lines of an older version have no per-task ids: nothing to ask sacct for them.
            latest.update({int(shard): task for shard, task in submission.get("tasks", {}).items()})
    return latest


def _sacct_states(job_ids: set[str]) -> dict[str, str]:
    """`<job>_<index>` -> SLURM state for the given array jobs; empty where sacct does not answer."""
    if not job_ids:
        return {}
    try:
        answer = subprocess.run(
            ["sacct", "-n", "-P", "-X", "--format=JobID,State", "-j", ",".join(sorted(job_ids))],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in answer.stdout.splitlines():
        job, _, state = line.partition("|")
        if "[" not in job:  # "<job>_[3-9]" rows are tasks not started yet
            states[job] = state.split()[0] if state else ""
    return states


def totals(rows: Sequence[ShardStatus]) -> dict[str, int]:
    return {key: sum(getattr(row, key) for row in rows) for key in ("items", "done", "failed", "todo")}


def as_json(rows: Sequence[ShardStatus]) -> dict[str, Any]:
    return {"shards": [asdict(row) for row in rows], "totals": totals(rows)}


def as_table(rows: Sequence[ShardStatus]) -> str:
    header = ("shard", "items", "done", "failed", "todo", "job", "state", "requeues", "last error")
    body = [
        (str(r.shard), str(r.items), str(r.done), str(r.failed), str(r.todo), r.job or "-", r.state,
         str(r.requeues), r.last_error[:80])
        for r in rows
    ]
    total = totals(rows)
    body.append(("total", str(total["items"]), str(total["done"]), str(total["failed"]), str(total["todo"]),
                 "", "", "", ""))
    return format_table(header, body)


@dataclass
class GroupStatus:
    """Per item group (`Item.group`, e.g. "train/500ms"): items, and how many have each output and all of them."""

    group: str
    items: int
    outputs: dict[str, int]
    complete: int


def group_statuses(run_dir: Path) -> list[GroupStatus]:
    """One row per item group, in item order. Unlike `shard_statuses` this re-reads the dataset's item list (groups
    are not in the manifest); files are only listed, never validated or removed."""
    manifest = Manifest.load(run_dir)
    items = build_dataset(manifest.config).items()
    outputs = build_stage(manifest.config).outputs
    rows: dict[str, GroupStatus] = {}
    for shard, (start, end) in enumerate(manifest.plan):
        folder = ShardStore.for_run(run_dir, manifest, shard, outputs).folder
        files = {name for name in os.listdir(folder) if not is_temporary(name)} if folder.is_dir() else set()
        for item in items[start:end]:
            row = rows.setdefault(item.group, GroupStatus(item.group, 0, {o.name: 0 for o in outputs}, 0))
            present = [f"{item.id}.{output.suffix}" in files for output in outputs]
            row.items += 1
            row.complete += all(present)
            for output, done in zip(outputs, present):
                row.outputs[output.name] += done
    return list(rows.values())


def groups_as_json(rows: Sequence[GroupStatus]) -> dict[str, Any]:
    return {"groups": [asdict(row) for row in rows]}


def groups_as_table(rows: Sequence[GroupStatus]) -> str:
    """`done/total` per group and output, and per group the items with every output."""
    names = list(rows[0].outputs) if rows else []
    header = ("group", *names, "complete")
    body = [(row.group or "-", *(f"{row.outputs[n]}/{row.items}" for n in names), f"{row.complete}/{row.items}")
            for row in rows]
    total = sum(row.items for row in rows)
    body.append(("total", *(f"{sum(row.outputs[n] for row in rows)}/{total}" for n in names),
                 f"{sum(row.complete for row in rows)}/{total}"))
    return format_table(header, body)


def format_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *body])
