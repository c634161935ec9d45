"""What a run folder says about its shards: valid items, failures, SLURM state and reason, speed and ETA.

Counts are of valid files, not of files: each shard folder is checked through its validation cache (only files that
changed since the shard's task last looked are opened), read-only, so status is cheap and safe beside running tasks.
SLURM's view comes from the queue (state and, for pending tasks, the reason) and from accounting for finished ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from shardprep.runtime.build import build_dataset, build_stage
from shardprep.runtime.config import CONF_DIR
from shardprep.runtime.progress import Attempt
from shardprep.runtime.run_folder import RunFolder, pid_alive
from shardprep.runtime.scheduler import earlier_runs, final_states, queued_tasks
from shardprep.runtime.store import ErrorRecord



@dataclass
class ShardStatus:
    shard: int
    items: int
    # done + failed + todo = items: each item is counted once.
    done: int  # items with every output present and valid
    failed: int  # items not done that failed at least once (since the last reset of attempts)
    gave_up: int  # of those, items not retried any more (max_attempts failed attempts)
    todo: int  # items not done that have not failed (not tried yet, or interrupted)
    job: str
    state: str
    requeues: int
    requeued_after: list[str]  # how the task's earlier runs ended (PREEMPTED, NODE_FAIL, REQUEUED), oldest first
    elapsed_s: float  # of the shard's last attempt
    rate: float  # items per second in that attempt
    eta_s: float | None  # at that rate, for what the running attempt still has to do
    last_error: str


@dataclass
class RunStatus:
    shards: list[ShardStatus]
    max_attempts: int
    merge_job: str = ""
    merge_state: str = ""
    notes: list[str] = field(default_factory=list)

    def left(self, retry_failed: bool = False) -> list[int]:
        """Shards with items still to do: not done and not given up (with `retry_failed`, given up ones too)."""
        return [row.shard for row in self.shards if row.todo + row.failed - (0 if retry_failed else row.gave_up) > 0]

    def totals(self) -> dict[str, int]:
        return {key: sum(getattr(row, key) for row in self.shards) for key in ("items", "done", "failed", "todo")}


def run_status(folder: RunFolder) -> RunStatus:
    """One row per shard. Item ids come from the checkpoint and error files, so the dataset is not re-read."""
    manifest = folder.manifest()
    outputs = build_stage(manifest.config).outputs
    max_attempts = int(manifest.config["max_attempts"])
    submissions = folder.submissions()
    tasks = _latest_tasks(submissions)
    merges = [s for s in submissions if s["kind"] == "merge"]
    slurm_jobs = {task.split("_")[0] for task in tasks.values()} | {m["job_id"] for m in merges if m["backend"] == "slurm"}
    queued = queued_tasks(slurm_jobs)
    finished = final_states(job for job in slurm_jobs if not any(t.split("_")[0] == job for t in queued))
    reruns = earlier_runs(slurm_jobs)
    status = RunStatus([], max_attempts)
    now = time.time()
    stores = folder.stores(manifest, outputs)
    # One thread: on 2 cores, threads over shards made the 1 M-checkpoint status slower (docs/runtime.md).
    scans = [store.check_folder() for store in stores]
    for shard, (start, end) in enumerate(manifest.plan):
        store = stores[shard]
        done_ids = scans[shard].complete
        attempts = store.attempts()
        failed_ids = set(attempts) - done_ids
        gave_up = {item for item in failed_ids if attempts[item] >= max_attempts}
        errors = [record for record in store.errors() if record.item in failed_ids]
        progress = folder.progress(shard)
        if progress.unreadable:
            status.notes.append(f"shard {shard}: {folder.progress_path(shard).name} is {progress.unreadable} (a crash "
                                "while it was written): attempt history lost; counts come from the checkpoints")
        last = progress.attempts[-1] if progress.attempts else None
        job = tasks.get(shard, "")
        state = queued.get(job) or finished.get(job) or _attempt_state(last)
        elapsed, rate, eta = _speed(last, now, running=state.startswith("RUNNING") or state == "running")
        status.shards.append(ShardStatus(
            shard=shard, items=end - start, done=len(done_ids), failed=len(failed_ids), gave_up=len(gave_up),
            todo=end - start - len(done_ids) - len(failed_ids), job=job, state=state,
            requeues=max([len(reruns.get(job, [])), *(attempt.restart_count for attempt in progress.attempts)]),
            requeued_after=reruns.get(job, []),
            elapsed_s=elapsed, rate=rate, eta_s=eta, last_error=errors[-1].error if errors else "",
        ))
    if merges:
        merge = merges[-1]
        status.merge_job = merge["job_id"]
        status.merge_state = queued.get(merge["job_id"]) or finished.get(merge["job_id"]) or "unknown"
    return status


def _latest_tasks(submissions: Sequence[dict[str, Any]]) -> dict[int, str]:
    """Per shard, the scheduler's id of its task in the newest array that included it (`<job>_<index>` for an
    array task; a plain id where submitit sent a single task as a plain job)."""
    latest: dict[int, str] = {}
    for submission in submissions:
        if submission["kind"] == "array" and submission["backend"] == "slurm":
            latest.update({int(shard): task for shard, task in submission["tasks"].items()})
    return latest


def _attempt_state(attempt: Attempt | None) -> str:
    """The state the shard's own record gives; a "running" attempt whose process is gone on this host stopped."""
    if attempt is None:
        return "not started"
    if attempt.state == "running" and pid_alive(attempt.host, attempt.pid) is False:
        return "stopped"
    return attempt.state


def _speed(attempt: Attempt | None, now: float, running: bool) -> tuple[float, float, float | None]:
    if attempt is None:
        return 0.0, 0.0, None
    elapsed = max(0.0, (now if running else (attempt.updated or attempt.started)) - attempt.started)
    rate = attempt.processed / elapsed if elapsed > 0 else 0.0
    left = attempt.todo - attempt.processed - attempt.failed
    eta = left / rate if running and rate > 0 else None
    return elapsed, rate, eta


def as_json(status: RunStatus) -> dict[str, Any]:
    return {"shards": [asdict(row) for row in status.shards], "totals": status.totals(),
            "gave_up": sum(row.gave_up for row in status.shards), "max_attempts": status.max_attempts,
            "merge": {"job": status.merge_job, "state": status.merge_state} if status.merge_job else None,
            "notes": status.notes}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _requeues(row: ShardStatus) -> str:
    """How many times the shard's task was requeued, and why: "1 (PREEMPTED)"."""
    return f"{row.requeues}" + (f" ({', '.join(row.requeued_after)})" if row.requeued_after else "")


def as_table(status: RunStatus) -> str:
    header = ("shard", "items", "done", "failed", "todo", "job", "state", "requeues", "elapsed", "items/s", "eta",
              "last error")
    rows = status.shards
    body = [
        (str(r.shard), str(r.items), str(r.done), f"{r.failed}" + (f" ({r.gave_up} gave up)" if r.gave_up else ""),
         str(r.todo), r.job or "-", r.state, _requeues(r), _duration(r.elapsed_s if r.elapsed_s else None),
         f"{r.rate:.2f}" if r.rate else "-", _duration(r.eta_s), r.last_error[:80])
        for r in rows
    ]
    total = status.totals()
    body.append(("total", str(total["items"]), str(total["done"]), str(total["failed"]), str(total["todo"]),
                 "", "", "", "", f"{sum(r.rate for r in rows):.2f}" if any(r.rate for r in rows) else "", "", ""))
    lines = [format_table(header, body)]
    if status.merge_job:
        lines.append(f"merge job {status.merge_job}: {status.merge_state}")
    lines.extend(status.notes)
    return "\n".join(lines)


def status_command(run_dir: Any) -> str:
    """The status command of a run, runnable as printed: it names dataset and stage only where conf/ has them under
    those names (a stage from an extra config search path would not compose without that path); out_dir alone finds
    the run either way."""
    folder = RunFolder(run_dir)
    config = folder.manifest().config
    names = [f"{group}={config[group]['name']}" for group in ("dataset", "stage")
             if (CONF_DIR / group / f"{config[group]['name']}.yaml").is_file()]
    return " ".join(["python launch/status.py", *names, f"out_dir={folder.path}"])


def gave_up_hint(status: RunStatus, status_command: str) -> str:
    """The line that says which items stopped being retried, and the command that retries them."""
    gave_up = [row for row in status.shards if row.gave_up]
    if not gave_up:
        return ""
    count = sum(row.gave_up for row in gave_up)
    shards = ", ".join(str(row.shard) for row in gave_up[:10]) + (", ..." if len(gave_up) > 10 else "")
    return (f"{count} item(s) are no longer retried: they failed max_attempts={status.max_attempts} times (shards "
            f"{shards}; errors/shard-*.jsonl has the tracebacks). Fix the cause, then: {status_command} resubmit=true "
            "retry_failed=true")


@dataclass
class GroupStatus:
    """Per item group (`Item.group`, e.g. "train/500ms"): items, and how many have each output and all of them."""

    group: str
    items: int
    outputs: dict[str, int]
    complete: int


def group_statuses(folder: RunFolder) -> list[GroupStatus]:
    """One row per item group, in item order. Unlike `run_status` this re-reads the dataset's item list (groups
    are not in the manifest); counts are of valid files, read-only."""
    manifest = folder.manifest()
    items = build_dataset(manifest.config).items()
    outputs = build_stage(manifest.config).outputs
    rows: dict[str, GroupStatus] = {}
    for shard, (start, end) in enumerate(manifest.plan):
        files = set(folder.store(manifest, shard, outputs).check_folder().valid)
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


def failures(folder: RunFolder) -> list[ErrorRecord]:
    """The newest failed attempt of each item that is not done, newest first (what `status errors=true` shows)."""
    manifest = folder.manifest()
    outputs = build_stage(manifest.config).outputs
    newest: dict[str, ErrorRecord] = {}
    for shard in range(len(manifest.plan)):
        store = folder.store(manifest, shard, outputs)
        done_ids = store.check_folder().complete
        for record in store.errors():
            if record.item not in done_ids and (record.item not in newest or record.time >= newest[record.item].time):
                newest[record.item] = record
    return sorted(newest.values(), key=lambda record: record.time, reverse=True)


def failures_as_text(records: Sequence[ErrorRecord]) -> str:
    """Failed items grouped by error, the group whose newest failure is the newest first, each with its items (newest
    attempt first, local date-time) and the newest traceback, unescaped."""
    if not records:
        return "no failed items"
    groups: dict[str, list[ErrorRecord]] = {}
    for record in records:  # already newest first, so the groups come out in that order too
        groups.setdefault(record.error, []).append(record)
    blocks = [f"{len(records)} failed item(s), {len(groups)} distinct error(s); newest first, times local"]
    for error, members in groups.items():
        lines = [f"== {len(members)} item(s): {error}"]
        lines += [f"  {r.item}  attempt {r.attempt}  {local_time(r.time)}  job {r.job or '-'}" for r in members]
        lines.append("  newest traceback:")
        lines += [f"    {line}" for line in members[0].traceback.rstrip().splitlines()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def local_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
