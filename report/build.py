"""Write a run's report folder: `<out_dir>/report/index.html` and its PNGs, built under a temporary name and renamed
into place, so a reader sees the previous report or the new one, never half of one.

It reads the run as status does (read-only, beside running tasks): the manifest, the shards' checkpoints through
their validation caches, the progress and error files, and SLURM's view of the jobs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from pathlib import Path

from omegaconf import OmegaConf

from shardprep.report import page
from shardprep.report.previews import Card, preview_for, preview_job
from shardprep.report.progress_plot import plot_progress, time_span
from shardprep.runtime.atomic import atomic_path
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.manifest import Manifest
from shardprep.runtime.progress import ShardProgress, producing_environments
from shardprep.runtime.run_folder import RunFolder
from shardprep.runtime.status import RunStatus, failures, local_time, run_status
from shardprep.runtime.store import ErrorRecord

REPORT = "report"
PROGRESS_PLOT = "progress.png"
FAILED_ITEMS_SHOWN = 20


def write_report(folder: RunFolder, argv: Sequence[str], n: int) -> Path:
    """Write the report of the run in `folder` (previews of `n` items); returns the path of its index.html."""
    manifest = folder.manifest()
    config = manifest.config
    status = run_status(folder)
    progresses = [folder.progress(shard) for shard in range(manifest.shards)]
    target = folder.path / REPORT
    with atomic_path(target) as tmp:
        tmp.mkdir()
        plotted = plot_progress(progresses, tmp / PROGRESS_PLOT)
        preview = preview_for(config["stage"]["name"], argv)
        cards: list[Card] = []
        unavailable = ""
        if preview is not None and n > 0:
            try:
                cards = preview(preview_job(folder, manifest, n, tmp))
            except ConfigError as error:  # e.g. the dataset is not readable here: the rest of the report still is
                unavailable = str(error)
        sections = [
            ("run", "Run", provenance(folder, manifest, progresses)),
            ("shards", "Shards", shard_table(status)),
            ("progress", "Items done over time", progress_section(plotted, status, progresses)),
            ("failures", "Failures", failure_section(failures(folder))),
            ("previews", f"Previews ({len(cards)} items)",
             page.paragraph(f"no previews: {unavailable}", note=True) if unavailable else
             previews_section(cards, preview is not None, n, config["stage"]["name"])),
        ]
        title = f"shardprep report: {config['dataset']['name']} / {config['stage']['name']}"
        (tmp / "index.html").write_text(page.page(title, sections))
    return target / "index.html"


def provenance(folder: RunFolder, manifest: Manifest, progresses: Sequence[ShardProgress]) -> str:
    rows = [("run folder", str(folder.path)), ("fingerprint", manifest.fingerprint),
            ("code version", manifest.code_version), ("planned", local_time(manifest.created)),
            ("items", str(manifest.item_count)), ("shards", str(manifest.shards)),
            ("report written", local_time(time.time()))]
    parts = [page.facts(rows)]
    environments = producing_environments(progresses)
    if environments:
        keys = sorted({key for environment in environments for key in environment})
        parts.append("<h3>Environments that wrote files</h3>")
        parts.append(page.table(keys, [[environment.get(key, "") for key in keys] for environment in environments]))
    parts.append("<h3>Resolved config</h3>")
    parts.append(page.preformatted(OmegaConf.to_yaml(OmegaConf.create(manifest.config))))
    return "\n".join(parts)


def shard_table(status: RunStatus) -> str:
    header = ("shard", "items", "valid", "failed", "gave up", "to do", "job", "state", "requeues", "elapsed (s)",
              "items/s")
    rows = [(r.shard, r.items, r.done, r.failed, r.gave_up, r.todo, r.job or "-", r.state, r.requeues,
             f"{r.elapsed_s:.0f}", f"{r.rate:.2f}") for r in status.shards]
    totals = status.totals()
    total = ("total", totals["items"], totals["done"], totals["failed"], sum(r.gave_up for r in status.shards),
             totals["todo"], "", "", sum(r.requeues for r in status.shards), "", "")
    parts = [page.table(header, rows, table_id="shard-table", row_keys=[str(r.shard) for r in status.shards],
                        total=total)]
    if status.merge_job:
        parts.append(page.paragraph(f"merge job {status.merge_job}: {status.merge_state}"))
    parts.extend(page.paragraph(note, note=True) for note in status.notes)
    return "\n".join(parts)


def progress_section(plotted: bool, status: RunStatus, progresses: Sequence[ShardProgress]) -> str:
    if not plotted:
        return page.paragraph("no shard has started yet", note=True)
    start, end = time_span(progresses) or (0.0, 0.0)
    processed = sum(attempt.processed for progress in progresses for attempt in progress.attempts)
    wall = end - start
    overall = f"{processed / wall:.2f} items/s" if wall > 0 else "-"
    rows = [("items processed (all attempts)", str(processed)), ("first start", local_time(start)),
            ("last update", local_time(end)), ("wall time", f"{wall:.0f} s"),
            ("throughput, first start to last update", overall),
            ("sum of the shards' last-attempt rates", f"{sum(r.rate for r in status.shards):.2f} items/s")]
    caption = ("Per attempt, the progress file keeps its start, its last save and how many items it had processed: "
               "the curve is linear in between.")
    return "\n".join([page.image(PROGRESS_PLOT, "items done over time"), page.paragraph(caption), page.facts(rows)])


def failure_section(records: Sequence[ErrorRecord]) -> str:
    if not records:
        return page.paragraph("no failed items")
    groups: dict[str, list[ErrorRecord]] = {}
    for record in records:  # newest first
        groups.setdefault(record.error, []).append(record)
    parts = [page.paragraph(f"{len(records)} failed item(s), {len(groups)} distinct error(s), newest first")]
    for error, members in groups.items():
        parts.append(f"<h3>{len(members)} item(s): {escape(error)}</h3>")
        rows = [(r.item, r.attempt, local_time(r.time), r.job or "-") for r in members[:FAILED_ITEMS_SHOWN]]
        parts.append(page.table(("item", "attempt", "time", "job"), rows))
        if len(members) > FAILED_ITEMS_SHOWN:
            parts.append(page.paragraph(f"... and {len(members) - FAILED_ITEMS_SHOWN} more (status errors=true)"))
        parts.append(page.paragraph(f"traceback of {members[0].item}, attempt {members[0].attempt}:"))
        parts.append(page.preformatted(members[0].traceback))
    return "\n".join(parts)


def previews_section(cards: Sequence[Card], has_preview: bool, n: int, stage: str) -> str:
    if not has_preview:
        return page.paragraph(f"stage {stage!r} has no preview (report/{stage}.yaml in the config search path would name "
                              "one)", note=True)
    if not cards:
        return page.paragraph("no complete item to preview yet" if n > 0 else "n=0: no previews asked", note=True)
    return page.paragraph(f"{len(cards)} items evenly spaced over the complete ones (n={n})") + page.cards(cards)
