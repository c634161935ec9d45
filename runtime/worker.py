"""Process one shard: find what is missing, read items ahead in threads, run the stage in batches, write outputs.

This is the code an array task runs. Everything it needs to resume is on disk, so running it again (after a kill,
a time limit or a preemption) redoes only the items in flight when it stopped.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.build import build_stage
from shardprep.runtime.progress import current_job, producing_environments
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
    batches = batch_plan(shard_items, todo, stage.batch_size, stage.fixed_batches)

    progress = folder.progress(shard)
    attempt = progress.start(
        items=len(shard_items), valid=len(shard_items) - len(missing), invalid=invalid, todo=len(todo)
    )
    progress.save()
    log.info("shard %d: %d items, %d valid, %d invalid, %d to do", shard, len(shard_items),
             len(shard_items) - len(missing), invalid, len(todo))
    if todo:
        stage.setup()
        attempt.environment = stage.environment()
        _say_if_environment_differs(folder, manifest.shards, shard, attempt.environment)
        progress.save()
    last_save = time.monotonic()
    job = current_job()
    with tqdm(total=len(todo), desc=f"shard {shard}", file=sys.stderr, mininterval=10) as bar:
        for outcomes in processed_batches(stage, dataset, batches, missing, store, {item.id for item in todo}):
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


def _say_if_environment_differs(folder: RunFolder, shards: int, shard: int, environment: dict[str, str]) -> None:
    """One line when this task's environment is not the one that made the run's files so far: on other hardware or
    software the same inputs can give other bits, so a resumed or partly redone run would mix them."""
    for earlier in producing_environments(folder.progress(other) for other in range(shards)):
        changed = sorted(key for key in {*earlier, *environment} if earlier.get(key) != environment.get(key))
        if changed:
            log.warning("shard %d: this task's %s differs from that of earlier outputs of this run (%s): its files "
                        "may differ bitwise from theirs; the merged files' provenance lists both", shard,
                        ", ".join(changed),
                        "; ".join(f"{key} {earlier.get(key, '-')} -> {environment.get(key, '-')}" for key in changed))
            return


def batch_plan(shard_items: Sequence[Item], todo: Sequence[Item], size: int, fixed: bool) -> list[list[Item]]:
    """The batches that bring the shard's `todo` items up to date.

    With `fixed` batches (Stage.fixed_batches) they are the groups of `size` consecutive items of the shard, whose
    first item starts one (the plan cuts at group boundaries), so a group is the same whatever the shard count:
    every group holding a todo item is processed whole. Otherwise the todo items are batched as they come.
    """
    if not fixed:
        return [list(todo[i:i + size]) for i in range(0, len(todo), size)]
    wanted = {item.id for item in todo}
    groups = [list(shard_items[i:i + size]) for i in range(0, len(shard_items), size)]
    return [group for group in groups if any(item.id in wanted for item in group)]


# An item and what became of it: None when its outputs are written, else the error of its processing or writing.
Outcome = tuple[Work | ReadFailure, BaseException | None]


def processed_batches(stage: Stage, dataset: Dataset, batches: Sequence[Sequence[Item]],
                      missing: dict[str, frozenset[str]], store: ShardStore,
                      write: set[str]) -> Iterator[list[Outcome]]:
    """Read and process `batches`, write the results of the items in `write` (the others of a fixed batch are
    there for its composition only); yield each batch's outcomes of those items (None, or the item's error) once
    written.

    The steps overlap: while batch N is processed, the batches after it go through the stage's `preparation`
    steps (batch N+1 in the last, N+2 in the one before...), each step in a thread of its own, and batch N-1 is
    written in another. Writing and validating an item's outputs can cost a good part of processing it (a fifth
    of a GPU stage's time per item in its benchmark, the GPU idle meanwhile). A kill loses at most the batches in
    those steps.
    """
    items = [item for batch in batches for item in batch]
    steps = stage.preparation()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer, ExitStack() as threads:
        preparation = Preparation(steps, [threads.enter_context(ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"prepare{index}")) for index in range(len(steps))])
        writing: Future[list[Outcome]] | None = None
        # Reads run ahead of the batch being processed by the batches in preparation (at least one) and one more.
        works = _read_ahead(stage.reader(dataset), items, missing, stage.read_workers,
                            (max(len(steps), 1) + 1) * stage.batch_size)
        for batch, prepared in _prepared_ahead(preparation, _batches(works, [len(batch) for batch in batches])):
            results = _process(stage, batch, prepared, preparation)
            if writing is not None:
                yield writing.result()
            writing = writer.submit(_write_batch, store, batch, results, write)
        if writing is not None:
            yield writing.result()


def _read_ahead(
    read: Callable[[Item], Any], items: Sequence[Item], missing: dict[str, frozenset[str]], workers: int,
    ahead: int,
) -> Iterator[Work | ReadFailure]:
    """Read items in background threads, at least `ahead` items (and one per worker) ahead, yielding them in
    order."""
    window = max(ahead, workers)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="read") as pool:
        pending: deque[tuple[Item, Future[Any]]] = deque()
        queue = iter(items)
        for item in queue:
            pending.append((item, pool.submit(read, item)))
            if len(pending) >= window:
                break
        while pending:
            item, future = pending.popleft()
            next_item = next(queue, None)
            if next_item is not None:
                pending.append((next_item, pool.submit(read, next_item)))
            try:
                yield Work(item, future.result(), missing.get(item.id, frozenset()))
            except Exception as error:  # an unreadable item is recorded, the shard goes on
                yield ReadFailure(item, error)


def _batches(works: Iterable[Work | ReadFailure], sizes: Sequence[int]) -> Iterator[list[Work] | list[ReadFailure]]:
    """Cut the stream of items into batches of `sizes`; an unreadable item goes through alone so its error gets
    recorded, and its batch is one item shorter."""
    stream = iter(works)
    for size in sizes:
        batch: list[Work] = []
        for work in islice(stream, size):
            if isinstance(work, ReadFailure):
                yield [work]
            else:
                batch.append(work)
        if batch:
            yield batch


def _write_batch(store: ShardStore, batch: Sequence[Work | ReadFailure],
                 results: Sequence[ItemResult | BaseException], write: set[str]) -> list[Outcome]:
    """Write each successful result of the items in `write`; their outcomes (None, or the error of their processing
    or writing)."""
    outcomes: list[Outcome] = []
    for work, result in zip(batch, results):
        if work.item.id not in write:
            continue
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


class Preparation:
    """A stage's `preparation` steps, each in its one-thread executor: a batch goes through them in order, and the
    batches follow one another through each (a step's thread sees one batch at a time, in the plan's order)."""

    def __init__(self, steps: Sequence[Callable[[Sequence[Work]], Sequence[Work]]],
                 executors: Sequence[ThreadPoolExecutor]) -> None:
        self.steps, self.executors = steps, executors

    @property
    def depth(self) -> int:
        """How many batches are in preparation at once, one per step."""
        return len(self.steps)

    def submit(self, batch: list[Work] | list[ReadFailure]) -> Future[Sequence[Work | ReadFailure]]:
        """The prepared batch, once its last step is done; the error of the first step that failed on it."""
        future: Future[Sequence[Work | ReadFailure]] = Future()
        future.set_result(batch)
        if isinstance(batch[0], ReadFailure):
            return future
        for step, executor in zip(self.steps, self.executors):
            future = executor.submit(_after, step, future)
        return future


def _after(step: Callable[[Sequence[Work]], Sequence[Work]], previous: Future[Sequence[Work]]) -> Sequence[Work]:
    return step(previous.result())


def _prepared_ahead(preparation: Preparation, batches: Iterable[list[Work] | list[ReadFailure]],
                    ) -> Iterator[tuple[list[Work] | list[ReadFailure], Future[Sequence[Work]]]]:
    """Each batch with its preparation under way: the next `preparation.depth` batches' are started before a
    batch is handed on."""
    pending: deque[tuple[list[Work] | list[ReadFailure], Future[Sequence[Work]]]] = deque()
    for batch in batches:
        pending.append((batch, preparation.submit(batch)))
        if len(pending) > preparation.depth:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


def _process(stage: Stage, batch: list[Work] | list[ReadFailure], prepared: Future[Sequence[Work]],
             preparation: Preparation) -> list[ItemResult | BaseException]:
    """Run the stage on a prepared batch; if the whole batch fails (in a preparation step or `process`), retry item
    by item so one bad item fails alone (prepared through the same step threads: each step runs in one thread)."""
    if isinstance(batch[0], ReadFailure):
        return [batch[0].error]
    try:
        results = stage.process(prepared.result())
    except Exception as error:
        if len(batch) == 1:
            return [error]
        log.warning("batch of %d failed (%s); retrying its items one by one", len(batch), error)
        return [_process(stage, [work], preparation.submit([work]), preparation)[0] for work in batch]
    if len(results) != len(batch):
        raise RuntimeError(f"stage {stage.name} returned {len(results)} results for {len(batch)} items")
    return results
