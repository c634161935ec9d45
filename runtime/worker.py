"""Process one shard: find what is missing, read items ahead in threads, run the stage in batches, write outputs.

This is the code an array task runs. Everything it needs to resume is on disk, so running it again (after a kill,
a time limit or a preemption) redoes only the items in flight when it stopped.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.build import build_stage
from shardprep.runtime.progress import current_job
from shardprep.runtime.run_folder import RunFolder
from shardprep.runtime.store import ShardStore
from shardprep.stages.base import ItemResult, Stage, Work

log = logging.getLogger(__name__)

PROGRESS_SAVE_SECONDS = 5.0


@dataclass
class ReadFailure:
    """An item whose `Dataset.read` raised: it skips the stage and its error is recorded."""

    item: Item
    error: BaseException


@dataclass
class ShardReport:
    shard: int
    items: int
    processed: int
    failed: int
    remaining: int


def run_shard(run_dir: Path, shard: int) -> ShardReport:
    """Bring shard `shard` of the run in `run_dir` as close to complete as its inputs allow."""
    folder = RunFolder(run_dir)
    manifest = folder.manifest()
    config = manifest.config
    dataset, items = folder.checked_items(manifest)
    stage = build_stage(config)
    start, end = manifest.plan[shard]
    shard_items = items[start:end]
    store = folder.store(manifest, shard, stage.outputs)
    missing, invalid = store.scan(item.id for item in shard_items)
    attempts = store.attempts()
    max_attempts = int(config["max_attempts"])
    todo = [item for item in shard_items if item.id in missing and attempts[item.id] < max_attempts]

    progress = folder.progress(shard)
    attempt = progress.start(
        items=len(shard_items), valid=len(shard_items) - len(missing), invalid=invalid, todo=len(todo)
    )
    progress.save()
    log.info("shard %d: %d items, %d valid, %d invalid, %d to do", shard, len(shard_items),
             len(shard_items) - len(missing), invalid, len(todo))
    if todo:
        stage.setup()
    last_save = time.monotonic()
    job = current_job()
    with tqdm(total=len(todo), desc=f"shard {shard}", file=sys.stderr, mininterval=10) as bar:
        for outcomes in processed_batches(stage, dataset, todo, missing, store):
            for work, error in outcomes:
                if error is None:
                    attempt.processed += 1
                else:
                    store.record_error(work.item.id, error, attempts[work.item.id] + 1, job)
                    attempt.failed += 1
            bar.update(len(outcomes))
            if time.monotonic() - last_save > PROGRESS_SAVE_SECONDS:
                progress.save()
                store.save_cache()
                last_save = time.monotonic()
    remaining = len(todo) - attempt.processed
    attempt.state = "finished" if remaining == 0 else "finished-with-failures"
    store.save_cache()
    progress.save()
    return ShardReport(shard, len(shard_items), attempt.processed, attempt.failed, remaining)


# An item and what became of it: None when its outputs are written, else the error of its processing or writing.
Outcome = tuple[Work | ReadFailure, BaseException | None]


def processed_batches(stage: Stage, dataset: Dataset, items: Sequence[Item], missing: dict[str, frozenset[str]],
                      store: ShardStore) -> Iterator[list[Outcome]]:
    """Read, process and write `items`; yield each batch's outcomes (None, or the item's error) once written.

    One batch is written in a background thread while the next is processed: writing and validating an item's
    outputs can cost a good part of processing it (a fifth of a GPU stage's time per item in its benchmark, the
    GPU idle meanwhile). A kill loses at most the batch being processed and the one being written.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer:
        writing: Future[list[Outcome]] | None = None
        for batch in _batches(_read_ahead(dataset, items, missing, stage.read_workers, stage.batch_size),
                             stage.batch_size):
            results = _process(stage, batch)
            if writing is not None:
                yield writing.result()
            writing = writer.submit(_write_batch, store, batch, results)
        if writing is not None:
            yield writing.result()


def _read_ahead(
    dataset: Dataset, items: Sequence[Item], missing: dict[str, frozenset[str]], workers: int, batch_size: int
) -> Iterator[Work | ReadFailure]:
    """Read items in background threads, a bounded window ahead, yielding them in order."""
    window = max(2 * batch_size, workers)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="read") as pool:
        pending: deque[tuple[Item, Future[Any]]] = deque()
        queue = iter(items)
        for item in queue:
            pending.append((item, pool.submit(dataset.read, item)))
            if len(pending) >= window:
                break
        while pending:
            item, future = pending.popleft()
            next_item = next(queue, None)
            if next_item is not None:
                pending.append((next_item, pool.submit(dataset.read, next_item)))
            try:
                yield Work(item, future.result(), missing[item.id])
            except Exception as error:  # an unreadable item is recorded, the shard goes on
                yield ReadFailure(item, error)


def _batches(works: Iterable[Work | ReadFailure], size: int) -> Iterator[list[Work] | list[ReadFailure]]:
    """Group readable items into batches; an unreadable one goes through alone so its error gets recorded."""
    batch: list[Work] = []
    for work in works:
        if isinstance(work, ReadFailure):
            yield [work]
            continue
        batch.append(work)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_batch(store: ShardStore, batch: Sequence[Work | ReadFailure],
                 results: Sequence[ItemResult | BaseException]) -> list[Outcome]:
    """Write each successful result; every item's outcome (None, or the error of its processing or writing)."""
    outcomes: list[Outcome] = []
    for work, result in zip(batch, results):
        if isinstance(result, BaseException):
            outcomes.append((work, result))
            continue
        try:
            store.write(work.item.id, result)
        except Exception as error:  # a result that cannot be written is that item's failure alone
            outcomes.append((work, error))
            continue
        outcomes.append((work, None))
    return outcomes


def _process(stage: Stage, batch: list[Work] | list[ReadFailure]) -> list[ItemResult | BaseException]:
    """Run the stage on a batch; if the whole batch fails, retry item by item so one bad item fails alone."""
    if isinstance(batch[0], ReadFailure):
        return [batch[0].error]
    try:
        results = stage.process(batch)
    except Exception as error:
        if len(batch) == 1:
            return [error]
        log.warning("batch of %d failed (%s); retrying its items one by one", len(batch), error)
        return [_process(stage, [work])[0] for work in batch]
    if len(results) != len(batch):
        raise RuntimeError(f"stage {stage.name} returned {len(results)} results for {len(batch)} items")
    return results
