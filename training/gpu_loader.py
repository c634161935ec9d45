"""A split held on the device: arrays moved once, batches gathered there with index tensors, no workers, no copies.

A DataLoader pays per sample in Python (indexing, collating, pinning, a host-to-device copy per batch); here a
batch is one `randperm` slice, one clamp to build its windows' positions, and one gather per field, all on the
GPU. Floating arrays may be cast to bf16 (integers and bools are kept as they are); windows are (anchor, video
bounds) triples, so 243-frame windows cost no more memory than frames. Before anything is moved, the memory the
split and one batch need is computed and compared with what the device has free; if it does not fit, one line says
how much is needed, how much is free, and what to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from shardprep.runtime.errors import ConfigError
from shardprep.training.dataset import sample_windows
from shardprep.training.table import Table
from shardprep.training.windows import Windows

INDEX_BYTES = 8  # int64 positions and rows


def stored_dtype(array: np.ndarray, dtype: torch.dtype | None) -> torch.dtype:
    """The device dtype of an array: floats as `dtype` (when given), everything else as it is."""
    native = torch.from_numpy(array[:0]).dtype
    return dtype if dtype is not None and native.is_floating_point else native


def memory_needed(table: Table, windows: Windows | None, dtype: torch.dtype | None, batch_size: int,
                  samples: int) -> int:
    """Bytes on the device: every field, `valid`, `rows`, the window triples and an epoch's permutation, and one
    batch (its gathered fields, positions and rows, counted twice for the temporaries of the gather)."""
    frame = sum(int(np.prod(values.shape[1:], dtype=np.int64)) * stored_dtype(values, dtype).itemsize
                for values in table.arrays.values()) + 1 + INDEX_BYTES
    steps = windows.seq_len if windows else 1
    batch = min(batch_size, max(samples, 1)) * steps * (frame + INDEX_BYTES) * 2
    return len(table) * frame + samples * 4 * INDEX_BYTES + batch


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise ConfigError("cannot tell how much memory is free on this machine (no MemAvailable in /proc/meminfo)")


class GPULoader:
    """Batches of a `Table` on `device`: dicts like `WindowDataset`'s samples with a leading batch axis."""

    def __init__(self, table: Table, windows: Windows | None = None, batch_size: int = 1024,
                 device: str | torch.device = "cuda", dtype: torch.dtype | None = torch.bfloat16,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False, invalid: str = "mask",
                 memory_limit: int | None = None) -> None:
        self.device = torch.device(device)
        self.windows, self.batch_size, self.shuffle, self.drop_last = windows, batch_size, shuffle, drop_last
        anchor, first, end = sample_windows(table, windows, invalid)
        self.needed = memory_needed(table, windows, dtype, batch_size, len(anchor))
        free = free_bytes(self.device)
        available = free if memory_limit is None else min(free, memory_limit)
        if self.needed > available:
            raise ConfigError(
                f"the split needs {self.needed / 2**30:.2f} GiB on {self.device} ({len(table)} frames, "
                f"{len(table.arrays)} fields, batch {batch_size}) but {available / 2**30:.2f} GiB is available: "
                "use dtype=torch.bfloat16, fewer fields, a smaller batch_size, or the DataLoader (WindowDataset)")
        move = lambda values: torch.from_numpy(np.ascontiguousarray(values)).to(self.device)  # noqa: E731
        # Cast on the host, so the device never holds a float32 copy of a bf16 split.
        self.arrays = {name: torch.from_numpy(np.ascontiguousarray(values)).to(stored_dtype(values, dtype)).to(self.device)
                       for name, values in table.arrays.items()}
        self.valid, self.rows = move(table.valid), move(table.rows)
        self.anchor, self.first, self.end = move(anchor), move(first), move(end)
        spec = windows or Windows(1)
        self.offsets, self.step = move(spec.offsets()), spec.step
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        count = len(self.anchor)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        count = len(self.anchor)
        order = (torch.randperm(count, generator=self.generator, device=self.device) if self.shuffle
                 else torch.arange(count, device=self.device))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.batch(order[start : start + self.batch_size])

    def batch(self, samples: torch.Tensor) -> dict[str, torch.Tensor]:
        """The samples at these indices: positions built on the device, then one gather per array."""
        anchor, first, end = self.anchor[samples], self.first[samples], self.end[samples]
        at = torch.minimum(torch.maximum(anchor[:, None] + self.step * self.offsets[None, :], first[:, None]),
                           end[:, None] - 1)
        if self.windows is None:
            at = at[:, 0]
        out = {name: values[at] for name, values in self.arrays.items()}
        out["valid"], out["row"] = self.valid[at], self.rows[at]
        return out
