"""Items done over time, drawn from the progress files (one entry per attempt at a shard).

A progress file keeps, per attempt, when it started, when it last saved and how many items it had processed by
then: between those two times the curve is drawn as a straight line, which is all the file can say.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shardprep.runtime.progress import Attempt, ShardProgress

SAMPLES = 200


def done_by(attempts: Sequence[Attempt], times: np.ndarray) -> np.ndarray:
    """Items processed by `attempts` at each of `times` (linear within each attempt)."""
    total = np.zeros(len(times))
    for attempt in attempts:
        end = max(attempt.updated, attempt.started)
        span = end - attempt.started
        share = np.clip((times - attempt.started) / span, 0.0, 1.0) if span > 0 else (times >= end).astype(float)
        total += attempt.processed * share
    return total


def time_span(progresses: Sequence[ShardProgress]) -> tuple[float, float] | None:
    attempts = [attempt for progress in progresses for attempt in progress.attempts]
    if not attempts:
        return None
    return min(a.started for a in attempts), max(max(a.updated, a.started) for a in attempts)


def plot_progress(progresses: Sequence[ShardProgress], path: Path) -> bool:
    """Write the plot to `path` (PNG): the run's total and, for up to 20 shards, each shard. False when no shard has
    started (nothing to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = time_span(progresses)
    if span is None:
        return False
    start, end = span
    times = np.linspace(start, end if end > start else start + 1.0, SAMPLES)
    minutes = (times - start) / 60
    figure, axes = plt.subplots(figsize=(8, 3.6), dpi=100)
    total = np.zeros(SAMPLES)
    for progress in progresses:
        done = done_by(progress.attempts, times)
        total += done
        if len(progresses) <= 20:
            axes.plot(minutes, done, linewidth=1, alpha=0.7, label=f"shard {progress.shard}")
    axes.plot(minutes, total, color="black", linewidth=2, label="all shards")
    axes.set_xlabel("minutes since the first attempt started")
    axes.set_ylabel("items processed")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=4, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return True
