"""Train/test files by subject from a merged run: `python launch/split.py dataset=fit3d [stage=depth]`.

Reads every merged split of the dataset (`<dataset>_<prefix>_<split>.npz`, and its `_dets.npy` twin if present),
keeps the rows of each subject list in `dataset.subjects`, and writes `<dataset>_<prefix>_<subset>.npz` (+ twin).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shardprep.launch.cli import guarded
from shardprep.merge import split, xycd
from shardprep.merge.job import load_merge
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import read_npz, write_npz

DETS = "dets"  # the twin's arrays travel as one more per-row array while splitting


@guarded
def main(argv: Sequence[str]) -> int:
    _, job = load_merge(argv)
    dataset = job.manifest.config["dataset"]
    subjects = job.config["dataset"].get("subjects") or {}
    if not subjects:
        raise ConfigError(f"dataset {dataset['name']!r} has no subject lists: set dataset.subjects, e.g. "
                          "'+dataset.subjects={train:[S1,S5],test:[S9]}'")
    prefix = job.config["merge"].get("prefix", "")
    stems = ["_".join(p for p in (dataset["name"], prefix, name) if p) for name in sorted(dataset.get("annotations") or {""})]
    parts = []
    for stem in stems:
        path = job.out_dir / f"{stem}.npz"
        if not path.is_file():
            raise ConfigError(f"merged file not found: {path}: run `python launch/merge.py` for this run first")
        arrays = read_npz(path)
        dets = job.out_dir / f"{stem}_dets.npy"
        if dets.is_file():
            arrays[DETS] = np.load(dets, allow_pickle=False)
        parts.append((str(path), arrays))
    merged = split.concatenate(parts)
    masks = split.masks(merged["imgname"], subjects)
    for subset, mask in masks.items():
        stem = "_".join(p for p in (dataset["name"], prefix, subset) if p)
        arrays = {key: array[mask] for key, array in merged.items()}
        dets = arrays.pop(DETS, None)
        write_npz(job.out_dir / f"{stem}.npz", arrays)
        print(f"split: {job.out_dir / f'{stem}.npz'} ({len(arrays['imgname'])} rows)")
        if dets is not None:
            path = job.out_dir / f"{stem}_dets.npy"
            xycd.write_npy(path, dets)
            print(f"split: {path}")
    kept = sum(int(mask.sum()) for mask in masks.values())
    if kept < len(merged["imgname"]):
        print(f"{len(merged['imgname']) - kept} rows belong to no subject list and were left out")
    return 0


if __name__ == "__main__":
    main()
