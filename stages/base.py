"""The stage interface: set up once per task, then turn batches of items into per-item outputs.

A stage knows nothing about SLURM, shards or files on disk: it declares its outputs, and returns for each item
either the arrays of an NPZ output or a function that writes a file output to a path it is given. The runtime
writes, validates and renames them into place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.outputs import ArrayOutput, Artifact, FileOutput, Output

__all__ = ["ArrayOutput", "Artifact", "FileOutput", "ItemResult", "Output", "Stage", "Work"]

ItemResult = Mapping[str, Artifact]


@dataclass
class Work:
    """An item handed to a stage: its payload from `Dataset.read` and the outputs still missing for it."""

    item: Item
    payload: Any
    todo: frozenset[str] = field(default_factory=frozenset)


class Stage(ABC):
    """A processing step. Subclasses are built from `conf/stage/*.yaml` through `_target_`; construction is cheap,
    heavy work (loading models) happens in `setup`, once per task."""

    outputs: Sequence[Output] = ()
    # True: batches are the fixed groups of `batch_size` consecutive items of the dataset's order (the last one
    # shorter), whatever the shard plan or whatever a resume redoes (a resume reprocesses a group's done items too and
    # writes only the missing ones). For stages whose results depend on what shares a batch (batched GPU kernels,
    # kernel choice per batch shape): their bytes then depend on the items only.
    fixed_batches: bool = False
    # What the payload of an item must carry (matched against `Dataset.gives` before submission), e.g. {"clip"}.
    needs: frozenset[str] = frozenset()

    def __init__(self, name: str, batch_size: int = 1, read_workers: int = 4) -> None:
        self.name = name
        self.batch_size = batch_size
        self.read_workers = read_workers

    def validate(self) -> None:
        """Raise `ConfigError` for a bad stage config (missing model files); called before submission."""

    def fingerprint_files(self) -> list[Path]:
        """Files whose content changes the outputs (model configs, checkpoints)."""
        return []

    def upstream_fingerprints(self) -> dict[str, str]:
        """Fingerprints of the runs whose outputs this stage reads, by name: an upstream run redone under other
        settings changes this stage's fingerprint too, so its old outputs are not taken as done."""
        return {}

    def setup(self) -> None:
        """Load models and other per-task state."""

    def reader(self, dataset: Dataset) -> Callable[[Item], Any]:
        """What the read-ahead threads call for each item (after `setup`): the dataset's `read` by default; a stage
        that decodes on its device takes `read_encoded`."""
        return dataset.read

    def environment(self) -> dict[str, str]:
        """What, besides the fingerprint, decides the output bytes in this process (device model, driver, library
        versions): recorded per attempt, so a resume elsewhere is noticed and a merge can say what made its files."""
        return {}

    def preparation(self) -> Sequence[Callable[[Sequence[Work]], Sequence[Work]]]:
        """The first parts of a batch's processing, in order; each returns the batch, payloads possibly replaced,
        that the next part (and after the last, `process`) gets. The runtime runs each step in a thread of its own,
        one batch after the other: with steps (decode, detect), batch N+2 is decoded while batch N+1's detector and
        batch N's `process` run, so a GPU stage keeps its JPEG engines and its streams busy at once. None by
        default: `process` gets the batch as read."""
        return ()

    def prepare(self, batch: Sequence[Work]) -> Sequence[Work]:
        """All of `preparation`'s steps on one batch, in this thread (tests, benchmarks)."""
        for step in self.preparation():
            batch = step(batch)
        return batch

    @abstractmethod
    def process(self, batch: Sequence[Work]) -> list[ItemResult | BaseException]:
        """Process a batch; one entry per work item, an exception for an item that failed on its own."""
