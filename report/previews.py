"""Previews of a few items of a run, chosen by the run's stage: `conf/report/<stage name>.yaml` names a callable
(`_target_`, built with that file's other keys; a stage from an extra config search path keeps its own there)
that draws them. A stage without such a file gets no previews; a
new stage brings its own by adding that one file, as it brings its merge (merge/job.py).

The sample is deterministic: `n` items evenly spaced over the run's complete items, in item order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from hydra.utils import instantiate

from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.build import build_stage
from shardprep.runtime.config import load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.manifest import Manifest
from shardprep.runtime.outputs import Output
from shardprep.runtime.run_folder import RunFolder
from shardprep.stages.base import Stage


T = TypeVar("T")


@dataclass
class Card:
    """One previewed item: its images (file names in the report folder), facts as (name, value) rows, and notes."""

    title: str
    images: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class PreviewJob:
    """What a preview gets: the run, its stage, its dataset, the sampled items and where each output file of each
    is, and the folder to write images into (the report's)."""

    folder: RunFolder
    manifest: Manifest
    stage: Stage
    dataset: Dataset
    items: list[Item]
    files: list[dict[str, Path]]  # per sampled item: output name -> its checkpoint file
    images_dir: Path


class Preview(Protocol):
    def __call__(self, job: PreviewJob) -> list[Card]: ...


def preview_for(stage_name: str, argv: Sequence[str]) -> Preview | None:
    """The preview of the stage, built from `report/<stage name>.yaml` of the config search path (conf/, and an
    extra `hydra.searchpath` on the command line); None when there is none."""
    try:
        config = load_config(argv, defaults=[f"+report={stage_name}"], strict=False)
    except ConfigError as error:
        if f"Could not find 'report/{stage_name}'" in str(error):
            return None
        raise
    try:
        return instantiate(config["report"], _convert_="all")
    except Exception as error:  # Hydra wraps the constructor's error; the user fixes report/<stage>.yaml
        raise ConfigError(f"report/{stage_name}.yaml: cannot build its preview: {error}") from None


def sample(complete: Sequence[T], n: int) -> list[T]:
    """`n` entries evenly spaced over `complete` (first and last included), in order."""
    if n <= 0 or not complete:
        return []
    picks = np.unique(np.linspace(0, len(complete) - 1, min(n, len(complete))).round().astype(int))
    return [complete[index] for index in picks]


def preview_job(folder: RunFolder, manifest: Manifest, n: int, images_dir: Path) -> PreviewJob:
    """The sample of the run's complete items and their files."""
    stage = build_stage(manifest.config)
    outputs: Sequence[Output] = stage.outputs
    dataset, items = folder.checked_items(manifest)
    complete, where = [], []
    for shard, (start, end) in enumerate(manifest.plan):
        store = folder.store(manifest, shard, outputs)
        done = store.check_folder().complete
        for item in items[start:end]:
            if item.id in done:
                complete.append(item)
                where.append({output.name: store.path(item.id, output) for output in outputs})
    chosen = sample(range(len(complete)), n)
    return PreviewJob(folder, manifest, stage, dataset, [complete[i] for i in chosen], [where[i] for i in chosen],
                      images_dir)


def write_figure(figure: Any, path: Path) -> str:
    """Save a matplotlib figure as PNG (no software tag: the same run gives the same bytes) and close it."""
    import matplotlib.pyplot as plt

    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return path.name
