"""What the runtime needs from a dataset: an ordered list of items, and a way to read one.

Datasets only enumerate and read. They know nothing about shards, checkpoints or models.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class Item:
    """One unit of work: usually a frame, for some stages a clip or a video.

    `id` names the item's checkpoint files, so it must be unique and filesystem-safe. `sequence` groups items that
    the sharder keeps together (a video, a camera view), and `weight` is the item's share of the work (frames).
    `group` is a free label for status tables (e.g. "train/500ms").
    """

    id: str
    sequence: str = ""
    weight: int = 1
    group: str = ""
    index: int = field(default=-1, compare=False)

    def __post_init__(self) -> None:
        if not _SAFE_ID.match(self.id):
            raise ValueError(f"item id {self.id!r} is not filesystem-safe (letters, digits, . _ + - only)")


class Dataset(ABC):
    """A source of items. Subclasses are built from `conf/dataset/*.yaml` through `_target_`."""

    # What its payloads carry beyond an image and its annotation, for stages that declare `Stage.needs`.
    gives: frozenset[str] = frozenset()

    def __init__(self, name: str) -> None:
        self.name = name

    def validate(self) -> None:
        """Raise `ConfigError` if the data cannot be read (missing root, missing keys); called before submission."""

    def resolved_settings(self) -> dict[str, Any]:
        """Settings that `validate` decided from the data (a detected file layout): the launch writes them into the
        run's config, so every task, the merge and a later launch read the same files without deciding again."""
        return {}

    @abstractmethod
    def items(self) -> list[Item]:
        """All items, in a fixed order that depends only on the data (never on the file system's listing order)."""

    @abstractmethod
    def read(self, item: Item) -> Any:
        """Load what a stage needs for one item. Raise with a message naming the file on bad input."""

    def read_encoded(self, item: Item) -> Any:
        """`read`, but with the image left encoded where the files allow it (`encoded`: the JPEG's bytes), for a
        stage that decodes on its GPU; datasets that cannot give it read as `read` does."""
        return self.read(item)

    def fingerprint_files(self) -> list[Path]:
        """Files whose content determines the items and their content (annotation files), for the run fingerprint."""
        return []
