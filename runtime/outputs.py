"""What a stage declares it writes per item, and what it hands the runtime to write: the checkpoint schema.

The runtime owns these types because it is the one that writes, validates and lists checkpoints; stages only declare
their outputs with them (stages/base.py re-exports them for stage authors).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Per item and output: the arrays of an NPZ output, or a writer for a file output.
Artifact = Mapping[str, np.ndarray] | Callable[[Path], None]

# Bytes of one array element when estimating an output's size (float32/int32; float64 outputs are rare).
_ESTIMATE_ITEMSIZE = 4
_NPZ_MEMBER_OVERHEAD = 250  # zip local + central header and .npy header of one member


@dataclass(frozen=True)
class ArrayOutput:
    """An NPZ file of named arrays. `arrays` maps each required key to its shape; `None` in a shape is any size."""

    name: str
    arrays: Mapping[str, tuple[int | None, ...]]
    suffix: str = "npz"

    def estimated_bytes(self) -> int | None:
        """About how large one item's file is; None when a shape has a free dimension."""
        total = 0
        for shape in self.arrays.values():
            if any(dim is None for dim in shape):
                return None
            total += int(np.prod(shape, dtype=np.int64)) * _ESTIMATE_ITEMSIZE + _NPZ_MEMBER_OVERHEAD
        return total + 2 * _NPZ_MEMBER_OVERHEAD  # the fingerprint member and the zip's end record


@dataclass(frozen=True)
class FileOutput:
    """Any other file (PNG, MP4, ...). `validate` raises if the file at the path is unusable. `size_hint`: about
    how many bytes one item's file takes, for the dry run's disk estimate (None: unknown)."""

    name: str
    suffix: str
    validate: Callable[[Path], None]
    size_hint: int | None = None

    def estimated_bytes(self) -> int | None:
        return self.size_hint


Output = ArrayOutput | FileOutput
