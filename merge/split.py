"""Cut merged training files into subsets by subject (Fit3D: train s03..s09, test s10 s11), every array alike.

`split_run` reads every merged split of a run (`<dataset>_<prefix>_<split>.npz` and its `_dets.npy` twin if there
is one), keeps the rows of each subject list of `dataset.subjects`, and writes `<dataset>_<prefix>_<subset>.npz`
(+ twin). A row's subject is what the run's dataset adapter parses from its imgname (the same regular expression
that named its sequence at launch: `s11_50591643-0_walk.mp4_000001.jpg` -> s11, `TS1_000001.jpg` -> TS1). Every
array must have one entry per row (first dimension N): an array that does not cannot be masked consistently and is
refused, naming it. The exceptions are the per-file values (the run's `fingerprint`, `joint_names`, `units`), which
every subset keeps; merged files of two runs are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from shardprep.merge import xycd
from shardprep.merge.job import MergeJob
from shardprep.merge.rows import METADATA_KEYS, merged_stem
from shardprep.runtime.build import build_dataset
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import read_npz, write_npz
from shardprep.runtime.store import FINGERPRINT_KEY

DETS = "dets"  # the twin's rows travel as one more per-row array while splitting
PER_FILE = (FINGERPRINT_KEY, *METADATA_KEYS)  # one value per file: kept by every subset, equal across the parts


def concatenate(parts: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Row-wise concatenation of merged files (name, arrays) that have the same keys, each checked for N rows."""
    keys = sorted(parts[0][1])
    for name, arrays in parts:
        check_rows(name, arrays)
        if sorted(arrays) != keys:
            raise ConfigError(f"{name} has arrays {sorted(arrays)}, {parts[0][0]} has {keys}: cannot split them together")
    return {key: np.concatenate([arrays[key] for _, arrays in parts]) for key in keys}


def check_rows(name: str, arrays: Mapping[str, np.ndarray]) -> int:
    if "imgname" not in arrays:
        raise ConfigError(f"{name}: no `imgname` array, so rows have no subject")
    rows = len(arrays["imgname"])
    for key, array in arrays.items():
        if key in PER_FILE:
            continue
        if array.ndim == 0 or array.shape[0] != rows:
            raise ConfigError(f"{name}: array {key!r} has shape {array.shape}, not one entry per row (N={rows}); "
                              "it cannot be split by subject")
    return rows


def masks(imgnames: np.ndarray, subjects: Mapping[str, Sequence[str]],
          subject_of: Callable[[str], str]) -> dict[str, np.ndarray]:
    """Per subset, which rows belong to it. A subject listed in two subsets is refused."""
    owner: dict[str, str] = {}
    for subset, names in subjects.items():
        for subject in names:
            if subject in owner:
                raise ConfigError(f"subject {subject!r} is in both {owner[subject]!r} and {subset!r}: fix dataset.subjects")
            owner[subject] = subset
    row_subjects = np.array([subject_of(name) for name in imgnames.tolist()])
    return {subset: np.isin(row_subjects, list(names)) for subset, names in subjects.items()}


def split_run(job: MergeJob) -> tuple[list[Path], int]:
    """Write the subsets of the run's merged files; return their paths and how many rows no subset took."""
    dataset = job.manifest.config["dataset"]
    subjects = job.config["dataset"].get("subjects") or {}
    if not subjects:
        raise ConfigError(f"dataset {dataset['name']!r} has no subject lists: set dataset.subjects, e.g. "
                          "'+dataset.subjects={train:[S1,S5],test:[S9]}'")
    prefix = job.config["merge"].get("prefix", "")
    parts = []
    for split_name in sorted(dataset.get("annotations") or {""}):
        path = job.out_dir / f"{merged_stem(dataset['name'], prefix, split_name)}.npz"
        if not path.is_file():
            raise ConfigError(f"merged file not found: {path}: run `python launch/merge.py` for this run first")
        arrays = read_npz(path)
        dets = path.with_name(f"{path.stem}_dets.npy")
        if dets.is_file():
            arrays[DETS] = np.load(dets, allow_pickle=False)
        parts.append((str(path), arrays))
    per_file = [{key: arrays.pop(key) for key in PER_FILE if key in arrays} for _, arrays in parts]
    for key in PER_FILE:
        values = {str(np.asarray(values[key]).tolist()) for values in per_file if key in values}
        if len(values) > 1:
            raise ConfigError(f"the merged files in {job.out_dir} differ in {key!r} ({' vs '.join(sorted(values))}): "
                              "they come from different runs; run `python launch/merge.py` for this run again")
    kept = per_file[0]
    merged = concatenate(parts)
    written = []
    dataset_adapter = build_dataset(job.manifest.config)
    subject_of = getattr(dataset_adapter, "subject_of", None)
    if subject_of is None:
        raise ConfigError(f"dataset {dataset['name']!r} names no subjects in its imgnames: it cannot be split by subject")
    selected = masks(merged["imgname"], subjects, subject_of)
    for subset, mask in selected.items():
        path = job.out_dir / f"{merged_stem(dataset['name'], prefix, subset)}.npz"
        arrays = {key: array[mask] for key, array in merged.items()}
        dets = arrays.pop(DETS, None)
        write_npz(path, {**arrays, **kept})
        written.append(path)
        if dets is not None:
            written.append(path.with_name(f"{path.stem}_dets.npy"))
            xycd.write_npy(written[-1], dets)
    return written, len(merged["imgname"]) - sum(int(mask.sum()) for mask in selected.values())

