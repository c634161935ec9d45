"""Find and read a run's per-item checkpoints for a merge: what is missing per shard, and pooled reading.

A merge reads hundreds of thousands of small NPZ files; opening them is the cost, so files are read in chunks by a
process pool and each chunk comes back as a few stacked arrays (one pickle per chunk, not per file). Results keep the
item order whatever the pool does, so the merged bytes do not depend on timing. A file that is missing, unreadable,
of another shape or written under another fingerprint (an older run in the same folder) is reported, never merged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shardprep.datasets.base import Item
from shardprep.merge.layout import Layout
from shardprep.runtime.manifest import Manifest
from shardprep.runtime.npz import npz_headers
from shardprep.runtime.run_folder import RunFolder
from shardprep.runtime.store import FINGERPRINT_KEY

CHUNK = 512

# Per item, why it has no usable checkpoint.
OK, MISSING, UNREADABLE, STALE, INVALID = 0, 1, 2, 3, 4
REASONS = {MISSING: "missing", UNREADABLE: "unreadable or wrong shape", STALE: "written by an older run",
           INVALID: "truncated, of other arrays or of another run"}

Spec = Mapping[str, tuple[tuple[int, ...], np.dtype]]


@dataclass(frozen=True)
class Checkpoints:
    """Where each item's checkpoint of one output is, and which shard holds it.

    `files` are plain strings: a merge handles a million of them, and `Path` objects cost more than the reading;
    `paths` gives them as `Path`s, built on first use.
    """

    files: list[str]
    shards: np.ndarray  # (items,) shard of each item
    folders: list[str]  # per shard

    @classmethod
    def locate(cls, folder: RunFolder, manifest: Manifest, items: Sequence[Item], suffix: str) -> Checkpoints:
        files, shards, folders = [], np.empty(len(items), dtype=np.int64), []
        for shard, (start, end) in enumerate(manifest.plan):
            shard_folder = str(folder.shard_folder(shard))
            files.extend(f"{shard_folder}/{item.id}.{suffix}" for item in items[start:end])
            shards[start:end] = shard
            folders.append(shard_folder)
        return cls(files, shards, folders)

    @cached_property
    def paths(self) -> list[Path]:
        return [Path(file) for file in self.files]

    def present(self) -> np.ndarray:
        """(items,) bool: the file exists. One directory listing per shard, no per-file stat calls; what is present
        is then validated as it is read (`read_all`)."""
        listed: set[str] = set()
        for folder in self.folders:
            try:
                with os.scandir(folder) as entries:
                    listed.update(f"{folder}/{entry.name}" for entry in entries)
            except FileNotFoundError:
                continue
        return np.array([file in listed for file in self.files], dtype=bool)

    def valid(self, valid_names: Sequence[frozenset[str]]) -> np.ndarray:
        """(items,) bool: the file is valid, by the shards' own validation (`RunFolder.valid_files`): the merge,
        status and the tasks agree on what is done."""
        return np.array([os.path.basename(file) in valid_names[shard] for file, shard in zip(self.files, self.shards)],
                        dtype=bool)


def spec_of(path: str | Path, keys: Sequence[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of `keys` in one checkpoint: the layout every other checkpoint must have."""
    headers = npz_headers(path)
    missing = [key for key in keys if key not in headers]
    if missing:
        raise ValueError(f"{path}: no array(s) {', '.join(missing)}; found {', '.join(sorted(headers))}")
    return {key: headers[key] for key in keys}


def read_all(paths: Sequence[str | Path], spec: Spec, fingerprint: str, workers: int,
             desc: str = "merge") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stack `spec`'s arrays of every file, in order: (arrays (len(paths), ...), status per file).

    Rows of files that are not OK stay zero. `workers` > 1 reads through a process pool. Files laid out like the
    first readable one take the fast path (merge/layout.py).
    """
    layout = _template(paths, [*spec, FINGERPRINT_KEY])
    arrays = {key: np.zeros((len(paths), *shape), dtype=dtype) for key, (shape, dtype) in spec.items()}
    status = np.zeros(len(paths), dtype=np.uint8)
    starts = range(0, len(paths), CHUNK)
    jobs = [(list(paths[start:start + CHUNK]), dict(spec), fingerprint, layout) for start in starts]
    with tqdm(total=len(paths), desc=desc, unit="file", mininterval=5, file=sys.stderr) as bar:
        if workers > 1 and len(jobs) > 1:
            with get_context().Pool(workers) as pool:
                chunks = pool.imap(_read_chunk, jobs)
                _collect(chunks, starts, arrays, status, bar)
        else:
            _collect(map(_read_chunk, jobs), starts, arrays, status, bar)
    return arrays, status


def _template(paths: Sequence[str | Path], keys: Sequence[str]) -> Layout | None:
    """The layout of the first file that parses (later files that differ fall back to `np.load`)."""
    for path in paths:
        try:
            return Layout.of(path, keys)
        except Exception:  # missing or unreadable: that file is reported when it is read; try the next one
            continue
    return None


def _collect(chunks, starts, arrays, status, bar) -> None:
    for start, (chunk_status, chunk_arrays) in zip(starts, chunks):
        end = start + len(chunk_status)
        status[start:end] = chunk_status
        for key, values in chunk_arrays.items():
            arrays[key][start:end] = values
        bar.update(end - start)


def _read_chunk(job: tuple[list[str | Path], Spec, str, Layout | None]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    paths, spec, fingerprint, layout = job
    arrays = {key: np.zeros((len(paths), *shape), dtype=dtype) for key, (shape, dtype) in spec.items()}
    status = np.zeros(len(paths), dtype=np.uint8)
    for i, path in enumerate(paths):
        status[i], values = _read_one(path, spec, fingerprint, layout)
        for key, value in values.items():
            arrays[key][i] = value
    return status, arrays


def _read_one(path: str | Path, spec: Spec, fingerprint: str, layout: Layout | None) -> tuple[int, dict[str, np.ndarray]]:
    try:
        values = layout.read(path) if layout is not None else None
        if values is None:
            with np.load(path, allow_pickle=False) as data:
                values = {key: data[key] for key in [*spec, FINGERPRINT_KEY]}
        if str(values.pop(FINGERPRINT_KEY)) != fingerprint:
            return STALE, {}
    except FileNotFoundError:
        return MISSING, {}
    except Exception:  # truncated zip, missing member, bad header: whatever numpy/zipfile raised, it is unusable
        return UNREADABLE, {}
    if any(values[key].shape != shape or values[key].dtype != dtype for key, (shape, dtype) in spec.items()):
        return UNREADABLE, {}
    return OK, values
