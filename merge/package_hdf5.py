"""Package a chain of per-video stages into training files: one HDF5 per video, plus normalisation statistics.

The run given is the chain's last stage; the stages before it are found through `depends_on` in each run's
manifest, so the packaging reads exactly the folders the stages read. Per item, every stage's outputs go into one
HDF5 file (`/<stage>/<output>/<array>`, through `merge.hdf5.write`: chunked, gzip, reproducible bytes, written
under a temporary name and renamed). In the same single pass, mean/std/count of the configured arrays over the
training split are accumulated with Chan's parallel-variance merge, so nothing but one video's arrays is ever in
memory. Items lacking any stage's
output are listed in `packaging_status.json` instead of being packaged half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from shardprep.merge import hdf5
from shardprep.runtime.atomic import atomic_path, write_json
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.run_folder import RunFolder
from shardprep.runtime.npz import read_npz
from shardprep.runtime.store import FINGERPRINT_KEY
from shardprep.stages.external.inputs import MissingInput, Upstream

STATS_FILE = "normalization_stats.yaml"
STATUS_FILE = "packaging_status.json"


@dataclass
class RunningStats:
    """Per-feature (last axis) count, mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        rows = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1] if values.ndim else 1)
        if len(rows) == 0:
            return
        batch_mean = rows.mean(axis=0)
        batch_m2 = ((rows - batch_mean) ** 2).sum(axis=0)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = len(rows), batch_mean, batch_m2
            return
        if batch_mean.shape != self.mean.shape:
            raise ValueError(f"feature size {batch_mean.shape[0]} differs from earlier items' {self.mean.shape[0]}")
        total = self.count + len(rows)
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (len(rows) / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * len(rows) / total)
        self.count = total

    def as_dict(self) -> dict[str, Any]:
        if self.mean is None or self.m2 is None:
            return {"count": 0, "mean": None, "std": None}
        return {"count": self.count, "mean": self.mean.tolist(), "std": np.sqrt(self.m2 / self.count).tolist()}


@dataclass
class PackageHDF5:
    """The merge of a video chain (`conf/merge/<last stage>.yaml`). `stats` names arrays as `<stage>/<output>/<array>`
    (statistics per component of the last axis); `train_groups` are the dataset groups (first folder) of the
    training split."""

    stats: Sequence[str] = ()
    train_groups: Sequence[str] = ("train",)

    def __call__(self, job: Any) -> list[Path]:
        return package(job.run_dir, job.out_dir, self, allow_partial=bool(job.allow_partial))


def chain(run_dir: Path) -> list[Upstream]:
    """The run and every run it depends on, first stage first, each once."""
    ordered: list[Upstream] = []
    seen: set[Path] = set()

    def visit(folder: Path) -> None:
        folder = folder.resolve()
        if folder in seen:
            return
        seen.add(folder)
        stage = RunFolder(folder).manifest().config["stage"]
        for upstream_dir in (stage.get("depends_on") or {}).values():
            visit(Path(upstream_dir))
        ordered.append(Upstream(stage["name"], folder))

    visit(Path(run_dir))
    return ordered


def package(run_dir: Path, out_dir: Path, options: PackageHDF5, allow_partial: bool = False) -> list[Path]:
    """Write `<out_dir>/<item>.h5` for every item with all stages' outputs, the statistics and the status report."""
    run_dir, out_dir = Path(run_dir).resolve(), Path(out_dir).resolve()
    stages = chain(run_dir)
    for upstream in stages:
        upstream.check()
    run = RunFolder(run_dir)
    _, items = run.checked_items(run.manifest())
    missing: dict[str, list[str]] = {}
    sources: dict[str, dict[str, dict[str, Path]]] = {}
    for item in items:
        found = {}
        for upstream in stages:
            try:
                found[upstream.name] = upstream.paths(item.id)
            except MissingInput as error:
                missing.setdefault(item.id, []).append(str(error))
        if item.id not in missing:
            sources[item.id] = found
    status = {
        "stages": {upstream.name: str(upstream.run_dir) for upstream in stages},
        "items": len(items),
        "complete": len(sources),
        "missing": missing,
    }
    write_json(out_dir / STATUS_FILE, status)
    if missing and not allow_partial:
        raise ConfigError(f"{len(missing)} of {len(items)} items lack stage outputs (listed in {out_dir / STATUS_FILE}):"
                          " finish those stages, or merge with allow_partial=true to package the complete items")
    stats = {name: RunningStats() for name in options.stats}
    train = set(options.train_groups)
    written = []
    for item in items:
        if item.id not in sources:
            continue
        arrays = {
            f"{stage}/{output}/{key}": value
            for stage, outputs in sources[item.id].items()
            for output, path in outputs.items()
            for key, value in read_output(path).items()
        }
        unknown = [name for name in stats if name not in arrays]
        if unknown:
            raise ConfigError(f"stats names {unknown[0]!r}, which item {item.id} does not have; arrays are: "
                              f"{', '.join(sorted(arrays))}")
        written.append(hdf5.write(out_dir / f"{item.id}.h5", arrays, {"item": item.id, "group": item.group}))
        if item.group in train:
            for name, running in stats.items():
                running.add(arrays[name])
    stats_path = out_dir / STATS_FILE
    with atomic_path(stats_path) as tmp:
        summary = {name: running.as_dict() for name, running in stats.items()}
        tmp.write_text(yaml.safe_dump({"train_groups": sorted(train), "arrays": summary}, sort_keys=True))
    return [*written, stats_path, out_dir / STATUS_FILE]


def read_output(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one checkpoint: a folder's `.npy`/`.npz` files (by file stem) or an NPZ (by key)."""
    if path.is_dir():
        arrays: dict[str, np.ndarray] = {}
        for file in sorted(path.rglob("*")):
            relative = file.relative_to(path).with_suffix("").as_posix()
            if file.suffix == ".npy":
                arrays[relative] = np.load(file, allow_pickle=False)
            elif file.suffix == ".npz":
                arrays.update({f"{relative}/{key}": value for key, value in read_npz(file).items()})
        return arrays
    if path.suffix == ".npz":
        return {key: value for key, value in read_npz(path).items() if key != FINGERPRINT_KEY}
    return {}
