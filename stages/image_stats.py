"""The runtime's test stage: per-frame image statistics, cheap and deterministic.

It exercises everything the runtime does (sharding, batching, checkpoints, resume, errors) without models, so the
runtime's tests and the demo run in seconds. `seconds_per_item` makes it slow on purpose, for tests that interrupt a
task mid-shard.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from shardprep.stages.base import ArrayOutput, ItemResult, Stage, Work


class ImageStatsStage(Stage):
    def __init__(self, name: str, batch_size: int = 4, read_workers: int = 2, bins: int = 16,
                 seconds_per_item: float = 0.0) -> None:
        super().__init__(name, batch_size, read_workers)
        self.bins = bins
        self.seconds_per_item = seconds_per_item
        self.outputs = (ArrayOutput("stats", {"mean": (3,), "std": (3,), "histogram": (3, bins), "image_size": (2,)}),)

    def process(self, batch: Sequence[Work]) -> list[ItemResult | BaseException]:
        results: list[ItemResult | BaseException] = []
        for work in batch:
            image = work.payload["image"]
            pixels = image.reshape(-1, 3).astype(np.float64)
            histogram = np.stack(
                [np.histogram(pixels[:, c], bins=self.bins, range=(0, 256))[0] for c in range(3)]
            ).astype(np.int64)
            results.append({
                "stats": {
                    "mean": pixels.mean(axis=0),
                    "std": pixels.std(axis=0),
                    "histogram": histogram,
                    "image_size": np.array(image.shape[:2], dtype=np.int64),
                }
            })
            time.sleep(self.seconds_per_item)
        return results
