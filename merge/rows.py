"""The merge of per-frame stages: per-item checkpoint arrays joined to the annotation rows, one file per split.

Each merged file holds every key of the split's annotation file unchanged, plus each configured checkpoint array
stacked in row order under its merged name, plus `valid` (N,) bool = the item's checkpoint was read and, when
`valid_from` is set, that array is true (e.g. `detected`). Rows without a usable checkpoint are zero-filled and refused
unless `allow_partial=true`. Nothing depends on the shard count or the order files were written in, so the bytes of
a merge depend only on the data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import json
import sys

import numpy as np

from shardprep import __version__
from shardprep.datasets import joints
from shardprep.datasets.base import Dataset, Item
from shardprep.datasets.mmpose_npz import UNITS, MMPoseDataset
from shardprep.datasets.splits import SplitDataset
from shardprep.merge import hdf5, xycd
from shardprep.merge.job import MergeJob
from shardprep.merge.reader import INVALID, MISSING, OK, REASONS, Checkpoints, read_all, spec_of
from shardprep.runtime.build import build_stage
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.progress import producing_environments
from shardprep.runtime.status import status_command
from shardprep.runtime.store import FINGERPRINT_KEY

FORMATS = ("xycd", "hdf5")
# Per-file (not per-row) arrays of a merged NPZ beside the fingerprint; HDF5 keeps them as attributes.
METADATA_KEYS = ("joint_names", "units", "environments")  # one value per merged file
SHOWN_SHARDS = 10


class RowMerge:
    """Configured by conf/merge/<stage>.yaml: the checkpoints' suffix (`<item id>.<suffix>`), which of their arrays
    go in under which names, and what makes a row valid."""

    def __init__(self, prefix: str, fields: dict[str, str], valid_from: str | None = None,
                 dets: dict[str, str] | None = None, default_format: str = "xycd", suffix: str = "npz",
                 joint_fields: list[str] | None = None, units: dict[str, str] | None = None) -> None:
        self.suffix = suffix
        self.prefix = prefix
        self.fields = fields
        self.valid_from = valid_from
        self.dets = dets
        self.default_format = default_format
        # Checkpoint arrays whose axis 1 is the joint (in H36M order, as the pose stages predict), and the units of
        # the merged arrays: written into every merged file with the dataset's joint names.
        self.joint_fields = joint_fields or []
        self.units = units or {}

    def __call__(self, job: MergeJob) -> list[Path]:
        form = job.format or self.default_format
        if form not in FORMATS:
            raise ConfigError(f"format={form!r}: use one of {', '.join(FORMATS)}")
        config = job.manifest.config
        dataset, items = job.folder.checked_items(job.manifest)
        tables = annotation_tables(dataset)
        for split, table in tables.items():
            clash = sorted(set(table) & {*self.fields.values(), "valid", FINGERPRINT_KEY, *METADATA_KEYS})
            if clash:
                raise ConfigError(f"the {split or dataset.name} annotation file already has {', '.join(clash)}: rename "
                                  f"them in `fields` of conf/merge/{config['stage']['name']}.yaml")
        checkpoints = Checkpoints.locate(job.folder, job.manifest, items, self.suffix)
        # Valid as the shards' tasks and status count it (through the validation cache: only files that changed since
        # a task last looked are opened here), so the merge never disagrees with status or a resume on what is done.
        valid_names = job.folder.valid_files(job.manifest, build_stage(config).outputs)
        status = np.where(checkpoints.valid(valid_names), OK,
                          np.where(checkpoints.present(), INVALID, MISSING)).astype(np.uint8)
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
        arrays, read = read_all(checkpoints.files, spec, job.manifest.fingerprint, job.workers,
                                desc=f"merge {dataset.name}")
        status = np.where(status == OK, read, status)  # a file changed while being merged is still caught
        if not job.allow_partial:
            _refuse_incomplete(job, items, checkpoints, status)
        valid = status == OK
        if self.valid_from:
            valid &= arrays[self.valid_from].astype(bool)
        names = joint_names(dataset)
        arrays = in_dataset_order(arrays, self.joint_fields, names)
        metadata = {"joint_names": list(names), "units": {**UNITS, **self.units}}
        drop = bool(job.config.get("drop_invalid", False))
        written = []
        made_by = provenance(job)
        for split, table in tables.items():
            rows = row_positions(items, split, len(table["imgname"]))
            merged = {**table, **{name: arrays[key][rows] for key, name in self.fields.items()}, "valid": valid[rows]}
            print(row_counts(f"{dataset.name} {split}".strip(), status[rows] == OK, valid[rows], drop))
            if drop:
                merged = {key: array[merged["valid"]] for key, array in merged.items()}
            stem = merged_stem(dataset.name, self.prefix, split)
            if form == "hdf5":
                attributes = {**run_attributes(job, split, merged["valid"]), **metadata, **made_by}
                written.append(hdf5.write(job.out_dir / f"{stem}.h5", merged, attributes))
            else:
                # The run's fingerprint travels in the file (HDF5: in its attributes), so a file says which run made it.
                merged[FINGERPRINT_KEY] = np.array(job.manifest.fingerprint)
                merged["joint_names"] = np.array(names)
                merged["units"] = np.array(json.dumps(metadata["units"], sort_keys=True))
                merged.update({key: np.array(json.dumps(value, sort_keys=True)) for key, value in made_by.items()})
                written.extend(xycd.write(job.out_dir, stem, merged, self.dets))
        return written


def joint_names(dataset: Dataset) -> tuple[str, ...]:
    """The order of the dataset's `part`/`S` as merged (3DHP: h36m or mpi, per `dataset.joint_order`)."""
    return tuple(getattr(dataset, "joint_names", joints.H36M))


def in_dataset_order(arrays: dict[str, np.ndarray], joint_fields: Sequence[str],
                     names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Predictions come in H36M order; a dataset that keeps another order (3DHP `joint_order: mpi`) gets them
    reordered by joint name, so ground truth and predictions of a merged file never mix two orders."""
    if names == joints.H36M:
        return arrays
    order = joints.reorder(joints.H36M, names)
    return {key: array[:, order] if key in joint_fields else array for key, array in arrays.items()}


def row_counts(label: str, present: np.ndarray, valid: np.ndarray, dropped: bool) -> str:
    """The per-split line the merge prints: how many rows MMPose will see, and what it does with the others."""
    missing = int((~present).sum())
    undetected = int((present & ~valid).sum())
    line = f"merge {label}: {len(valid)} rows: {int(valid.sum())} valid, {undetected} undetected, {missing} missing"
    if not undetected + missing:
        return line
    if dropped:
        return f"{line}; drop_invalid=true: the {undetected + missing} invalid rows are left out of every array"
    return (f"{line}; their predictions are zero: MMPose's lifting datasets drop rows whose 2D detections are all "
            "zero without a word and never read `valid` (test metrics then cover fewer frames); drop_invalid=true "
            "writes the files without them")


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
    raise ConfigError(
        f"run {job.run_dir} is incomplete: {len(bad)} of {len(items)} items have no usable checkpoint; "
        f"{'; '.join(details)}. Finish them with `{status_command(job.run_dir)} resubmit=true` (or re-run the launch "
        "command), "
        "or merge what exists with allow_partial=true (those rows get valid=false)"
    )
