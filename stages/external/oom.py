"""Retry an item that ran out of memory with a smaller batch option, down to a floor.

A tool's memory use grows with its batch (frames per chunk, tracks per pass); the right size depends on the video and
the GPU, so it is found at run time: start at `start`, shrink by `factor` after each recognised out-of-memory, and
give up at `floor`. The size that worked becomes the starting size for the task's next items, so one long video does
not cost every later item the same failed attempts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from shardprep.runtime.errors import ConfigError

DEFAULT_PATTERNS = (
    r"out of memory",                # CUDA, cuDNN and the host allocator all say it
    r"OutOfMemoryError",             # torch.cuda.OutOfMemoryError, jax RESOURCE_EXHAUSTED wrappers
    r"CUBLAS_STATUS_ALLOC_FAILED",
    r"RESOURCE_EXHAUSTED",
)


@dataclass
class OOMPolicy:
    """`option` is the template placeholder that holds the batch size (e.g. `batch_size` for `{batch_size}`)."""

    option: str
    start: int
    factor: float = 0.5
    floor: int = 1
    patterns: Sequence[str] = DEFAULT_PATTERNS
    current: int = field(init=False)

    def __post_init__(self) -> None:
        if not (0 < self.factor < 1):
            raise ConfigError(f"stage.oom.factor={self.factor}: must be between 0 and 1 (0.5 halves the batch)")
        if not (1 <= self.floor <= self.start):
            raise ConfigError(f"stage.oom: need 1 <= floor ({self.floor}) <= start ({self.start})")
        self._regex = re.compile("|".join(f"(?:{p})" for p in self.patterns), re.IGNORECASE)
        self.current = self.start

    def is_oom(self, log_text: str) -> bool:
        return bool(self._regex.search(log_text))

    def smaller(self, value: int) -> int | None:
        """The next size to try after an out-of-memory at `value`; None when `value` is already the floor."""
        if value <= self.floor:
            return None
        return max(self.floor, min(value - 1, math.floor(value * self.factor)))

    def succeeded(self, value: int) -> None:
        self.current = min(self.current, value)
