"""The worker loop's overlap of `Stage.preparation` steps with `process`, on a stage that records what ran where."""

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


class ThreeStep(Stage):
    """Two preparation steps (double, then add ten) and process (add one), recording the threads each ran in and
    when each step started on which batch; `double` refuses a batch holding `bad` (so the worker retries its
    items)."""

    def __init__(self, bad: int | None = None) -> None:
        super().__init__("three_step", batch_size=4, read_workers=2)
        self.outputs = (ArrayOutput("value", {"value": ()}),)
        self.bad = bad
        self.threads: dict[str, set[int]] = {"double": set(), "add_ten": set(), "process": set()}
        self.started: dict[tuple[str, int], threading.Event] = {}
        self.overlapped: list[bool] = []

    def preparation(self) -> tuple:
        return (self.double, self.add_ten)

    def began(self, step: str, batch: int) -> threading.Event:
        return self.started.setdefault((step, batch), threading.Event())

    def double(self, batch: Sequence[Work]) -> list[Work]:
        self.threads["double"].add(threading.get_ident())
        self.began("double", batch[0].payload // 4).set()
        if self.bad is not None and any(work.payload == self.bad for work in batch):
            raise ValueError(f"item {self.bad} cannot be prepared")
        return [Work(work.item, 2 * work.payload, work.todo) for work in batch]

    def add_ten(self, batch: Sequence[Work]) -> list[Work]:
        self.threads["add_ten"].add(threading.get_ident())
        self.began("add_ten", batch[0].payload // 8).set()
        return [Work(work.item, work.payload + 10, work.todo) for work in batch]

    def process(self, batch: Sequence[Work]) -> list[ItemResult | BaseException]:
        self.threads["process"].add(threading.get_ident())
        number = (batch[0].payload - 10) // 8
        if self.bad is None and number < 2:
            # While batch N is processed, batch N+1 is in the last step and batch N+2 in the first.
            self.overlapped.append(self.began("add_ten", number + 1).wait(WAIT_S)
                                   and self.began("double", number + 2).wait(WAIT_S))
        return [{"value": {"value": np.array(work.payload + 1)}} for work in batch]


def run(stage: ThreeStep, tmp: Path, count: int = 16) -> tuple[dict[str, int], list[str]]:
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


def test_later_batches_go_through_the_preparation_steps_while_one_is_processed(tmp_path: Path) -> None:
    stage = ThreeStep()
    written, failed = run(stage, tmp_path)
    assert failed == []
    assert written == {f"n{index:03d}": 2 * index + 11 for index in range(16)}
    assert stage.overlapped == [True, True]
    threads = stage.threads
    assert all(len(ids) == 1 for ids in threads.values()) and len(set.union(*threads.values())) == 3


def test_a_batch_whose_preparation_fails_is_retried_item_by_item(tmp_path: Path) -> None:
    stage = ThreeStep(bad=5)
    written, failed = run(stage, tmp_path)
    assert failed == ["n005"]
    assert written == {f"n{index:03d}": 2 * index + 11 for index in range(16) if index != 5}
    assert all(len(ids) == 1 for ids in stage.threads.values())  # the retries go through the same step threads
