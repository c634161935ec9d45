"""The merge of per-frame stages: per-item checkpoint arrays joined to the annotation rows, one file per split.

Each merged file holds every key of the split's annotation file unchanged, plus each configured checkpoint array
stacked in row order under its merged name, plus `valid` (N,) bool = the item's checkpoint was read and, when
`valid_from` is set, that array is true (e.g. `detected`). Rows without a usable checkpoint are zero-filled and refused
unless `allow_partial=true`. Nothing depends on the shard count or the order files were written in, so the bytes of
a merge depend only on the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import json
import sys

import numpy as np

from shardprep import __version__
from shardprep.datasets.base import Dataset, Item
from shardprep.datasets.mmpose_npz import MMPoseDataset
from shardprep.datasets.splits import SplitDataset
from shardprep.merge import hdf5, xycd
from shardprep.merge.job import MergeJob
from shardprep.merge.reader import MISSING, OK, REASONS, Checkpoints, read_all, spec_of
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.progress import producing_environments
from shardprep.runtime.store import FINGERPRINT_KEY

FORMATS = ("xycd", "hdf5")
SHOWN_SHARDS = 10


class RowMerge:
    """Configured by conf/merge/<stage>.yaml: the checkpoints' suffix (`<item id>.<suffix>`), which of their arrays
    go in under which names, and what makes a row valid."""

    def __init__(self, prefix: str, fields: dict[str, str], valid_from: str | None = None,
                 dets: dict[str, str] | None = None, default_format: str = "xycd", suffix: str = "npz") -> None:
        self.suffix = suffix
        self.prefix = prefix
        self.fields = fields
        self.valid_from = valid_from
        self.dets = dets
        self.default_format = default_format

    def __call__(self, job: MergeJob) -> list[Path]:
        form = job.format or self.default_format
        if form not in FORMATS:
            raise ConfigError(f"format={form!r}: use one of {', '.join(FORMATS)}")
        config = job.manifest.config
        dataset, items = job.folder.checked_items(job.manifest)
        tables = annotation_tables(dataset)
        for split, table in tables.items():
            clash = sorted(set(table) & {*self.fields.values(), "valid", FINGERPRINT_KEY})
            if clash:
                raise ConfigError(f"the {split or dataset.name} annotation file already has {', '.join(clash)}: rename "
                                  f"them in `fields` of conf/merge/{config['stage']['name']}.yaml")
        checkpoints = Checkpoints.locate(job.folder, job.manifest, items, self.suffix)
        status = np.where(checkpoints.present(), OK, MISSING).astype(np.uint8)
        if not job.allow_partial:
            _refuse_incomplete(job, items, checkpoints, status)
        if not (status == OK).any():
            raise ConfigError(f"no *.{self.suffix} checkpoints in {job.run_dir}: launch the stage first")
        keys = sorted({*self.fields, *([self.valid_from] if self.valid_from else [])})
        first = checkpoints.files[int(np.argmax(status == OK))]
        try:
            spec = spec_of(first, keys)
        except (OSError, ValueError) as error:
            raise ConfigError(f"conf/merge/{config['stage']['name']}.yaml does not fit the checkpoints: {error}") from None
        arrays, status = read_all(checkpoints.files, spec, job.manifest.fingerprint, job.workers,
                                  desc=f"merge {dataset.name}")
        if not job.allow_partial:
            _refuse_incomplete(job, items, checkpoints, status)
        valid = status == OK
        if self.valid_from:
            valid &= arrays[self.valid_from].astype(bool)
        written = []
        made_by = provenance(job)
        for split, table in tables.items():
            rows = row_positions(items, split, len(table["imgname"]))
            merged = {**table, **{name: arrays[key][rows] for key, name in self.fields.items()}, "valid": valid[rows]}
            stem = merged_stem(dataset.name, self.prefix, split)
            if form == "hdf5":
                attributes = {**run_attributes(job, split, merged["valid"]), **made_by}
                written.append(hdf5.write(job.out_dir / f"{stem}.h5", merged, attributes))
            else:
                # The run's fingerprint travels in the file (HDF5: in its attributes), so a file says which run made it.
                merged[FINGERPRINT_KEY] = np.array(job.manifest.fingerprint)
                merged.update({key: np.array(json.dumps(value, sort_keys=True)) for key, value in made_by.items()})
                written.extend(xycd.write(job.out_dir, stem, merged, self.dets))
        return written


def merged_stem(dataset: str, prefix: str, split: str) -> str:
    """`h36m_xycd_train`; a dataset of one unnamed split (the demo) gives `demo_xycd`."""
    return "_".join(part for part in (dataset, prefix, split) if part)


def annotation_tables(dataset: Dataset) -> dict[str, dict[str, np.ndarray]]:
    """Per split, the annotation arrays the items' `index` points into; one unnamed split for a single file."""
    if isinstance(dataset, SplitDataset):
        return dataset.tables()
    if isinstance(dataset, MMPoseDataset):
        return {"": dataset.arrays}
    raise ConfigError(f"dataset {dataset.name!r} has no annotation rows to merge into (needs an MMPose-format dataset)")


def row_positions(items: Sequence[Item], split: str, rows: int) -> np.ndarray:
    """Positions in `items` of the split's rows 0..rows-1, in row order; every row must have exactly one item."""
    positions = np.array([i for i, item in enumerate(items) if item.group == split], dtype=np.int64)
    indices = np.array([items[i].index for i in positions], dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    if not np.array_equal(indices[order], np.arange(rows)):
        raise RuntimeError(f"the items of split {split!r} do not map one-to-one onto its {rows} annotation rows")
    return positions[order]


def run_attributes(job: MergeJob, split: str, valid: np.ndarray) -> dict[str, object]:
    """The run's manifest minus how it was executed (shards, plan, folders, dates, git state), so the bytes of a
    merged file do not depend on them."""
    config = job.manifest.config
    return {
        "dataset": config["dataset"],
        "stage": config["stage"],
        "fingerprint": job.manifest.fingerprint,
        "item_count": job.manifest.item_count,
        "split": split,
        "valid_count": int(valid.sum()),
        "shardprep_version": __version__,
    }


def provenance(job: MergeJob) -> dict[str, object]:
    """The environments (device, driver, library versions) whose attempts wrote the checkpoints, when the stage
    reports them; more than one means the files mix outputs of different hardware or software, and is said."""
    found = producing_environments(job.folder.progress(shard) for shard in range(job.manifest.shards))
    if len(found) > 1:
        print(f"merge: the checkpoints of {job.run_dir} were made in {len(found)} environments (device or library "
              "versions differ): the merged files record them all under 'environments'", file=sys.stderr)
    return {"environments": sorted(found, key=lambda e: json.dumps(e, sort_keys=True))} if found else {}


def _refuse_incomplete(job: MergeJob, items: Sequence[Item], checkpoints: Checkpoints, status: np.ndarray) -> None:
    bad = np.flatnonzero(status != OK)
    if not len(bad):
        return
    per_shard: dict[int, list[int]] = {}
    for i in bad:
        per_shard.setdefault(int(checkpoints.shards[i]), []).append(int(i))
    details = []
    for shard, positions in list(per_shard.items())[:SHOWN_SHARDS]:
        reasons = sorted({REASONS[int(status[i])] for i in positions})
        examples = ", ".join(items[i].id for i in positions[:3])
        details.append(f"shard {shard}: {len(positions)} {'/'.join(reasons)} ({examples}{', ...' if len(positions) > 3 else ''})")
    if len(per_shard) > SHOWN_SHARDS:
        details.append(f"{len(per_shard) - SHOWN_SHARDS} more shards")
    config = job.manifest.config
    raise ConfigError(
        f"run {job.run_dir} is incomplete: {len(bad)} of {len(items)} items have no usable checkpoint; "
        f"{'; '.join(details)}. Finish them with `python launch/status.py dataset={config['dataset']['name']} "
        f"stage={config['stage']['name']} out_dir={job.run_dir} resubmit=true` (or re-run the launch command), "
        "or merge what exists with allow_partial=true (those rows get valid=false)"
    )
