"""The external-tool packaging as a `Table`: per-video HDF5 (`/<stage>/<output>/<array>`) + normalization_stats.yaml.

`merge/package_hdf5.py` writes one file per video and, over the training groups, per array named in its `stats`,
the population mean and std of each component of the last axis. Here the chosen arrays of every video (files
sorted by name, optionally only some groups) are concatenated in frame order, one video per file, and each array
the stats name is normalised on load, `(x - mean) / std`; a component with std 0 is only centred. The stats' keys
are checked against the files first: a stats array a file lacks, or a mean whose length is not the array's last
axis, is refused naming both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

from shardprep.runtime.errors import ConfigError
from shardprep.training.table import Table

STATS_FILE = "normalization_stats.yaml"  # the name merge/package_hdf5.py writes


@dataclass(frozen=True)
class Stats:
    mean: np.ndarray
    std: np.ndarray

    def normalize(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def unnormalize(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


def read_stats(folder: Path) -> dict[str, Stats]:
    path = folder / STATS_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: package the run with launch/merge.py first")
    arrays = (yaml.safe_load(path.read_text()) or {}).get("arrays") or {}
    stats = {}
    for name, entry in arrays.items():
        if not entry.get("count"):
            raise ConfigError(f"{path}: {name!r} has no statistics (count 0: no training video had it)")
        std = np.asarray(entry["std"], np.float32)
        stats[name] = Stats(np.asarray(entry["mean"], np.float32), np.where(std > 0, std, 1).astype(np.float32))
    return stats


def external_split(folder: str | Path, fields: Sequence[str], groups: Sequence[str] | None = None,
                   normalize: bool = True) -> tuple[Table, dict[str, Stats]]:
    """The chosen per-frame arrays of every video in `folder` (only `groups`, e.g. ["train"], when given), normalised
    with the folder's statistics; also returns the statistics, to undo the normalisation of predictions."""
    folder = Path(folder)
    stats = read_stats(folder) if normalize else {}
    files = sorted(folder.glob("*.h5"))
    columns: dict[str, list[np.ndarray]] = {name: [] for name in fields}
    names, lengths = [], []
    for path in files:
        with h5py.File(path, "r") as handle:
            if groups is not None and handle.attrs.get("group") not in groups:
                continue
            for name in [*fields, *stats]:
                if name not in handle:
                    raise ConfigError(f"{path.name} has no array {name!r} ({'named in ' + STATS_FILE if name in stats else 'a requested field'})")
            for name, entry in stats.items():
                if handle[name].shape[-1:] != entry.mean.shape:
                    raise ConfigError(f"{path.name}: {name!r} has last axis {handle[name].shape[-1:]}, but {STATS_FILE} "
                                      f"has {len(entry.mean)} means: the stats are of another packaging")
            frames = {name: handle[name].shape[0] for name in fields}
            if len(set(frames.values())) != 1:
                raise ConfigError(f"{path.name}: the fields have different frame counts {frames}; choose per-frame arrays")
            for name in fields:
                values = handle[name][()]
                columns[name].append(stats[name].normalize(values.astype(np.float32)) if name in stats else values)
        names.append(path.stem)
        lengths.append(next(iter(frames.values())))
    if not names:
        raise ConfigError(f"no video files (*.h5{', groups ' + ', '.join(groups) if groups else ''}) in {folder}")
    ends = np.cumsum(lengths).astype(np.int64)
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    count = int(ends[-1])
    table = Table(arrays, np.arange(count, dtype=np.int64), np.ones(count, bool), ends - np.asarray(lengths), ends, names)
    return table, stats
