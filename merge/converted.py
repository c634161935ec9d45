"""The convert merge: per-video annotation rows and frame folders joined into the layout of the dataset's converter.

Per split, the videos' rows are concatenated in item order (the converter's row order) into the annotation file the
raw dataset names (`annotation_body3d/fps10/h36m_train.npz`, ...); every video's frames are placed in its frame
folder (`images/S1/S1_Directions_1.54138969/`), as hard links to the checkpoints where the file system allows
(copies otherwise, or with `files=copy`), each under a temporary name renamed into place; the dataset's extra files
(cameras) are written beside them. The result is a dataset root the MMPose-format adapters read with their default
settings: `launch/depth.py dataset=h36m dataset.root=<merged_dir>`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from shardprep.datasets.raw_video import ANNOTATION_ROWS, RawVideoDataset
from shardprep.merge.job import MergeJob
from shardprep.runtime.atomic import atomic_path, write_with
from shardprep.runtime.build import build_stage
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import read_npz, write_npz
from shardprep.stages.frames import listed_frames

FILE_MODES = ("hardlink", "copy")
SHOWN = 5


class ConvertMerge:
    def __init__(self, files: str = "hardlink") -> None:
        if files not in FILE_MODES:
            raise ConfigError(f"merge.files={files!r}: use one of {', '.join(FILE_MODES)}")
        self.files = files

    def __call__(self, job: MergeJob) -> list[Path]:
        dataset, items = job.folder.checked_items(job.manifest)
        if not isinstance(dataset, RawVideoDataset):
            raise ConfigError(f"the run in {job.run_dir} did not convert a raw dataset (dataset {dataset.name!r})")
        valid = job.folder.valid_files(job.manifest, build_stage(job.manifest.config).outputs)
        shard_of = job.folder.shard_of_items(job.manifest, items)
        done = [item for item in items
                if {f"{item.id}.npz", f"{item.id}.frames"} <= valid[shard_of[item.id]]]
        converted = {item.id for item in done}
        missing = [item.id for item in items if item.id not in converted]
        if missing and not job.allow_partial:
            config = job.manifest.config
            raise ConfigError(f"run {job.run_dir}: {len(missing)} of {len(items)} videos are not converted "
                              f"({', '.join(missing[:SHOWN])}{', ...' if len(missing) > SHOWN else ''}); see "
                              f"`python launch/status.py dataset={config['dataset']['name']} stage="
                              f"{config['stage']['name']} errors=true`, or merge without them: allow_partial=true")
        # Frames first: an annotation file that exists names only frames that do.
        for item in done:
            self._place_frames(job.folder.shard_folder(shard_of[item.id]) / f"{item.id}.frames",
                               job.out_dir / dataset.frame_folder(item))
        written = []
        for split in sorted({item.group for item in items}):
            rows = [self._rows(job, shard_of[item.id], item.id) for item in done if item.group == split]
            if not rows:
                continue
            target = job.out_dir / dataset.annotation_file(split)
            write_npz(target, {key: np.concatenate([row[key] for row in rows]) for key in ANNOTATION_ROWS})
            written.append(target)
            print(f"{dataset.name} {split}: {sum(len(row['imgname']) for row in rows)} rows from {len(rows)} videos"
                  + (f" ({len(missing)} videos of the run left out: allow_partial)" if missing else ""))
        for relative, write in dataset.extra_files().items():
            try:
                write_with(job.out_dir / relative, write, durable=True)
            except (OSError, ValueError) as error:
                raise ConfigError(f"cannot write {job.out_dir / relative}: {error}") from None
            written.append(job.out_dir / relative)
        return written

    @staticmethod
    def _rows(job: MergeJob, shard: int, item_id: str) -> dict[str, np.ndarray]:
        arrays = read_npz(job.folder.shard_folder(shard) / f"{item_id}.npz")
        return {key: arrays[key] for key in ANNOTATION_ROWS}

    def _place_frames(self, source: Path, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for name in listed_frames(source):
            frame, placed = source / name, target / name
            if placed.exists() and os.path.samefile(frame, placed):
                continue  # placed by an earlier merge of the same checkpoint
            with atomic_path(placed) as tmp:
                link_or_copy(frame, tmp, self.files)


def link_or_copy(source: Path, target: Path, mode: str) -> None:
    if mode == "hardlink":
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another file system, or links refused: copy
    shutil.copyfile(source, target)

