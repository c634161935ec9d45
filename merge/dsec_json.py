"""The merge of the DSEC events stage: a relocatable dataset folder per split and clip duration (dsec_publish.py),
each with its LLaVA/HF-style JSON.

Each entry names one complete clip (all four outputs present and valid): `id`, `event_data` (the events NPZ),
`video_data` (the MP4), `video_frames` (its frames folder), `image` (the event image, or a list of them), with paths
relative to the published folder, and `conversations` from the configured prompt and answer templates; a clip of a
dataset with `partial_clips=flag` that the event stream covers only in part also gets `partial: true` and
`covered_us` (the covered span, µs from the clip start). Incomplete clips are never listed; they are reported per
split and duration, and the merge refuses to write anything for an incomplete run unless `allow_partial=true` (each
valid file of an incomplete clip is still published, so the completeness table shows what is there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shardprep.datasets.dsec import DSECDataset, duration_label
from shardprep.merge.dsec_publish import FILE_MODES, Completeness, place, place_frames, place_images
from shardprep.merge.job import MergeJob
from shardprep.merge.reader import Checkpoints
from shardprep.runtime.atomic import atomic_path, write_json
from shardprep.runtime.build import build_dataset, build_stage
from shardprep.runtime.errors import ConfigError

# Template fields, with example values used to check a template before anything is read.
FIELDS = {"id": "train.1s.seq.00000", "split": "train", "duration": "1s", "duration_ms": 1000, "sequence": "seq",
          "clip": 0, "start_us": 0, "end_us": 1000000, "frames": 20}
class DSECJsonMerge:
    """Configured by conf/merge/events.yaml."""

    def __init__(self, prompt: str, answer: str = "", files: str = "hardlink") -> None:
        if files not in FILE_MODES:
            raise ConfigError(f"merge.files={files!r}: use one of {', '.join(FILE_MODES)}")
        self.files = files
        for name, template in (("prompt", prompt), ("answer", answer)):
            try:
                template.format_map(FIELDS)
            except (KeyError, IndexError, ValueError) as error:
                raise ConfigError(f"merge.{name}={template!r}: bad template ({error!r}); fields: "
                                  f"{', '.join('{' + key + '}' for key in FIELDS)}") from None
        self.prompt = prompt
        self.answer = answer

    def __call__(self, job: MergeJob) -> list[Path]:
        if job.format not in (None, "json"):
            raise ConfigError(f"format={job.format!r}: the events merge writes json only")
        config = job.manifest.config
        dataset = build_dataset(config)
        if not isinstance(dataset, DSECDataset):
            raise ConfigError(f"the events merge needs a DSEC dataset, the run used {dataset.name!r}")
        _, items = job.folder.checked_items(job.manifest, dataset)
        complete, paths, valid = self._complete(job, items)
        incomplete = _incomplete_report(items, complete)
        if incomplete and not job.allow_partial:
            raise ConfigError(f"run {job.run_dir} is incomplete: {incomplete}. Finish it by re-running the launch "
                              "command (or status resubmit=true), or write the complete clips with allow_partial=true")
        if incomplete:
            print(f"incomplete clips, not listed: {incomplete}")
        images = build_stage(config).convention.images_per_clip
        table = Completeness()
        written = []
        for group in dict.fromkeys(item.group for item in items):
            split, duration = group.split("/")
            name = f"{dataset.name}_{split}_{duration}"
            members = [i for i, item in enumerate(items) if item.group == group]
            with atomic_path(job.out_dir / name) as folder:
                entries = []
                for i in members:
                    files = self._publish(dataset.clip(items[i]), i, paths, valid, images, folder, name, table)
                    if complete[i]:
                        entries.append(self._entry(dataset, items[i], files))
                write_json(folder / f"{name}.json", entries)
                table.add(name, "json", len(entries))
            written.append(job.out_dir / name)
        print(table.table())
        return written

    def report(self, out_dir: Path, dataset_name: str) -> str | None:
        """The completeness table of the folders published in `out_dir` (None if there are none)."""
        folders = sorted(path for path in out_dir.glob(f"{dataset_name}_*") if path.is_dir())
        return Completeness.of_folders(folders).table() if folders else None

    def _publish(self, clip: Any, position: int, paths: dict[str, Checkpoints], valid: dict[str, np.ndarray],
                 images: int, folder: Path, name: str, table: Completeness) -> dict[str, Any]:
        """Link or copy the clip's valid files into the published folder; their paths relative to it, by kind."""
        stem = f"{clip.index:06d}"
        relative = {
            "events": Path("event_npy", clip.sequence, f"{stem}.npz"),
            "eventgpt": Path("event_npy", clip.sequence, f"{stem}.npy"),
            "image": [Path("event_image", clip.sequence, f"{stem}_{i}.png") for i in range(images)],
            "frames": Path("video", clip.sequence, stem),
            "video": Path("mp4", clip.sequence, f"{stem}.mp4"),
        }
        kinds = {"events": "event_npy", "image": "event_image", "frames": "video", "video": "mp4"}
        for output, checkpoints in paths.items():
            if not valid[output][position]:
                continue
            source = checkpoints.paths[position]
            if output == "image":
                place_images(source, [folder / path for path in relative["image"]], self.files)
            elif output == "frames":
                place_frames(source, folder / relative["frames"], self.files)
            else:
                place(source, folder / relative[output], self.files)
            if output in kinds:
                table.add(name, kinds[output])
        return {key: value for key, value in relative.items() if key in paths}

    def _complete(self, job: MergeJob, items: Sequence[Any]) -> tuple[np.ndarray, dict[str, Checkpoints],
                                                                       dict[str, np.ndarray]]:
        """Per item: every output present and valid (by the shards' own validation), and per output which are."""
        outputs = build_stage(job.manifest.config).outputs
        valid_names = job.folder.valid_files(job.manifest, outputs)
        complete = np.ones(len(items), dtype=bool)
        paths, valid = {}, {}
        for output in outputs:
            checkpoints = Checkpoints.locate(job.folder, job.manifest, items, output.suffix)
            valid[output.name] = checkpoints.valid(valid_names)
            complete &= valid[output.name]
            paths[output.name] = checkpoints
        return complete, paths, valid

    def _entry(self, dataset: DSECDataset, item: Any, files: dict[str, Any]) -> dict[str, Any]:
        clip = dataset.clip(item)
        fields = {"id": item.id, "split": clip.split, "duration": duration_label(clip.duration_ms),
                  "duration_ms": clip.duration_ms, "sequence": clip.sequence, "clip": clip.index,
                  "start_us": clip.start_us, "end_us": clip.end_us, "frames": len(clip.frames)}
        images = [str(path) for path in files["image"]]
        entry: dict[str, Any] = {"id": item.id, "event_data": str(files["events"]), "video_data": str(files["video"]),
                                 "video_frames": str(files["frames"]), "image": images[0] if len(images) == 1 else images}
        if "eventgpt" in files:
            entry["eventgpt_data"] = str(files["eventgpt"])
        if dataset.partial_clips == "flag" and clip.partial:
            entry["partial"] = True
            entry["covered_us"] = [clip.covered[0] - clip.start_us, clip.covered[1] - clip.start_us]
        entry["conversations"] = [
            {"from": "human", "value": self.prompt.format_map(fields)},
            {"from": "gpt", "value": self.answer.format_map(fields)},
        ]
        return entry


def _incomplete_report(items: Sequence[Any], complete: np.ndarray) -> str:
    """"train/1s: 3 of 40 (train.1s.x.00001, ...); ..." for the groups with incomplete clips; "" if none."""
    parts = []
    for group in dict.fromkeys(item.group for item in items):
        members = [i for i, item in enumerate(items) if item.group == group]
        missing = [items[i].id for i in members if not complete[i]]
        if missing:
            examples = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            parts.append(f"{group}: {len(missing)} of {len(members)} ({examples})")
    return "; ".join(parts)
