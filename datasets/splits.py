"""A dataset made of one MMPose annotation file per split (train, test, ...), read by one adapter class.

One run then covers the whole dataset: items of every split, splits sorted by name (the manifest stores configs with
sorted keys, so the order written in the YAML cannot be relied on) and then in row order,
each with `group` = its split and `index` = its row in that split's file, which is what the merge needs to write
the training files of each split row-aligned with its annotation file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shardprep.datasets.base import Dataset, Item
from shardprep.datasets.mmpose_npz import MMPoseDataset, check_unique_ids, choose_layout
from shardprep.runtime.errors import ConfigError

# Per-row shapes of the annotation keys that have a fixed layout (MMPose body-3D, 17 joints).
ROW_SHAPES = {"center": (2,), "part": (17, 3), "S": (17, 4)}


class SplitDataset(Dataset):
    """Splits of one dataset. Subclasses name their per-file adapter in `part`; extra options go to it."""

    part: ClassVar[type[MMPoseDataset]] = MMPoseDataset

    def __init__(self, name: str, root: str, annotations: dict[str, str], image_root: str = "images",
                 subjects: dict[str, list[str]] | None = None, **options: Any) -> None:
        super().__init__(name)
        if not annotations:
            raise ConfigError(f"dataset {name!r}: `annotations` is empty; give at least one split: path")
        self.root = Path(root).expanduser()
        # Relative paths are under `root`; `Path.__truediv__` keeps absolute ones as they are.
        self.parts = {
            split: self.part(name, annotation=str(self.root / path), image_root=str(self.root / image_root), **options)
            for split, path in sorted(annotations.items())
        }
        # Subject lists per output subset, for `launch/split.py`; not used to enumerate items.
        self.subjects = subjects or {}

    def validate(self) -> None:
        for split, part in self.parts.items():
            part.check_annotation()
            check_row_shapes(part.annotation, part.arrays)
        check_unique_ids(f"dataset {self.name}", [row for split, part in self.parts.items()
                                                  for row in part.labelled_rows(split)])
        choose_layout(self.name, self.parts)  # one layout for every split

    def resolved_settings(self) -> dict[str, Any]:
        return next(iter(self.parts.values())).resolved_settings()

    @property
    def joint_names(self) -> tuple[str, ...]:
        return next(iter(self.parts.values())).joint_names

    def subject_of(self, imgname: str) -> str:
        first = next(iter(self.parts.values()))
        try:
            return first.subject_of(imgname)  # type: ignore[attr-defined]
        except (AttributeError, KeyError):
            raise ConfigError(f"dataset {self.name!r}: its imgnames name no subject, so it cannot be split by "
                              "subject") from None

    def items(self) -> list[Item]:
        return [
            dataclasses.replace(item, group=split)
            for split, part in self.parts.items()
            for item in part.items()
        ]

    def read(self, item: Item) -> Any:
        return self.parts[item.group].read(item)

    def tables(self) -> dict[str, dict[str, np.ndarray]]:
        """The annotation arrays of each split, as the items index them."""
        return {split: part.arrays for split, part in self.parts.items()}

    def fingerprint_files(self) -> list[Path]:
        return [path for part in self.parts.values() for path in part.fingerprint_files()]


def check_row_shapes(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for key, shape in ROW_SHAPES.items():
        if key in arrays and arrays[key].shape[1:] != shape:
            raise ConfigError(
                f"{path}: {key!r} has shape {arrays[key].shape}, expected (N, {', '.join(map(str, shape))}); "
                "is this an MMPose body-3D annotation file with 17 joints?"
            )
