"""The worker loop's overlap of `Stage.prepare` with `process`, on a stage that records what ran where."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.run_folder import RunFolder
from shardprep.runtime.worker import batch_plan, processed_batches
from shardprep.stages.base import ArrayOutput, ItemResult, Stage, Work

WAIT_S = 20.0


class Numbers(Dataset):
    def __init__(self, count: int) -> None:
        super().__init__("numbers")
        self.count = count

    def items(self) -> list[Item]:
        return [Item(f"n{index:03d}") for index in range(self.count)]

    def read(self, item: Item) -> int:
        return int(item.id[1:])


class TwoStep(Stage):
    """prepare doubles, process adds one; prepare refuses a batch holding `bad` (so the worker retries its items)."""

    def __init__(self, bad: int | None = None) -> None:
        super().__init__("two_step", batch_size=4, read_workers=2)
        self.outputs = (ArrayOutput("value", {"value": ()}),)
        self.bad = bad
        self.prepare_threads: set[int] = set()
        self.process_threads: set[int] = set()
        self.prepare_started: dict[int, threading.Event] = {}
        self.overlapped: list[bool] = []

    def prepare(self, batch: Sequence[Work]) -> list[Work]:
        self.prepare_threads.add(threading.get_ident())
        self.prepare_started.setdefault(batch[0].payload // 4, threading.Event()).set()
        if self.bad is not None and any(work.payload == self.bad for work in batch):
            raise ValueError(f"item {self.bad} cannot be prepared")
        return [Work(work.item, 2 * work.payload, work.todo) for work in batch]

    def process(self, batch: Sequence[Work]) -> list[ItemResult | BaseException]:
        self.process_threads.add(threading.get_ident())
        following = batch[0].payload // 8 + 1  # the next batch's number (payloads are doubled)
        if following < 3:  # while this batch is processed, the next one's prepare has started
            self.overlapped.append(self.prepare_started.setdefault(following, threading.Event()).wait(WAIT_S))
        return [{"value": {"value": np.array(work.payload + 1)}} for work in batch]


def run(stage: TwoStep, tmp: Path, count: int = 12) -> tuple[dict[str, int], list[str]]:
    dataset = Numbers(count)
    items = dataset.items()
    store = RunFolder(tmp).shard_store(0, stage.outputs, "test")
    missing = {item.id: frozenset({"value"}) for item in items}
    failed = []
    for outcomes in processed_batches(stage, dataset, batch_plan(items, items, stage.batch_size, False), missing,
                                      store, set(missing)):
        failed += [work.item.id for work, error in outcomes if error is not None]
    written = {}
    for path in sorted(RunFolder(tmp).shard_folder(0).glob("*.npz")):
        with np.load(path) as arrays:
            written[path.stem] = int(arrays["value"])
    return written, failed


def test_the_next_batch_is_prepared_while_one_is_processed_in_another_thread(tmp_path: Path) -> None:
    stage = TwoStep()
    written, failed = run(stage, tmp_path)
    assert failed == []
    assert written == {f"n{index:03d}": 2 * index + 1 for index in range(12)}
    assert stage.overlapped == [True, True]
    assert len(stage.prepare_threads) == 1 and stage.prepare_threads.isdisjoint(stage.process_threads)


def test_a_batch_whose_prepare_fails_is_retried_item_by_item(tmp_path: Path) -> None:
    stage = TwoStep(bad=5)
    written, failed = run(stage, tmp_path)
    assert failed == ["n005"]
    assert written == {f"n{index:03d}": 2 * index + 1 for index in range(12) if index != 5}
    assert len(stage.prepare_threads) == 1  # the retries are prepared in the same thread
