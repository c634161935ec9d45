"""The merge of the DSEC events stage: LLaVA/HF-style JSON files, one per split and clip duration.

Each entry names one complete clip (all four outputs present and valid): `id`, `event_data` (the events NPZ),
`video_data` (the MP4), `image` (the event image), with paths relative to the JSON file's folder, and `conversations`
from the configured prompt and answer templates. Incomplete clips are never listed; they are reported per split and
duration, and the merge refuses to write anything for an incomplete run unless `allow_partial=true`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shardprep.datasets.dsec import DSECDataset, duration_label
from shardprep.merge.job import MergeJob
from shardprep.merge.reader import Checkpoints
from shardprep.runtime.atomic import write_json
from shardprep.runtime.build import build_dataset, build_stage
from shardprep.runtime.errors import ConfigError

# Template fields, with example values used to check a template before anything is read.
FIELDS = {"id": "train.1s.seq.00000", "split": "train", "duration": "1s", "duration_ms": 1000, "sequence": "seq",
          "clip": 0, "start_us": 0, "end_us": 1000000, "frames": 20}
# Entry key -> stage output whose checkpoint it points to.
PATH_KEYS = {"event_data": "events", "video_data": "video", "image": "image"}


class DSECJsonMerge:
    """Configured by conf/merge/events.yaml."""

    def __init__(self, prompt: str, answer: str = "") -> None:
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
        complete, paths = self._complete(job, items)
        incomplete = _incomplete_report(items, complete)
        if incomplete and not job.allow_partial:
            raise ConfigError(f"run {job.run_dir} is incomplete: {incomplete}. Finish it by re-running the launch "
                              "command (or status resubmit=true), or write the complete clips with allow_partial=true")
        if incomplete:
            print(f"incomplete clips, not listed: {incomplete}")
        written = []
        for group in dict.fromkeys(item.group for item in items):
            split, duration = group.split("/")
            target = job.out_dir / f"{dataset.name}_{split}_{duration}.json"
            entries = [self._entry(dataset, item, paths, i, target.parent)
                       for i, item in enumerate(items) if item.group == group and complete[i]]
            write_json(target, entries)
            written.append(target)
        return written

    def _complete(self, job: MergeJob, items: Sequence[Any]) -> tuple[np.ndarray, dict[str, Checkpoints]]:
        """Per item: every output present and valid, by the shards' own validation."""
        outputs = build_stage(job.manifest.config).outputs
        valid_names = job.folder.valid_files(job.manifest, outputs)
        complete = np.ones(len(items), dtype=bool)
        paths = {}
        for output in outputs:
            checkpoints = Checkpoints.locate(job.folder, job.manifest, items, output.suffix)
            complete &= checkpoints.valid(valid_names)
            paths[output.name] = checkpoints
        return complete, paths

    def _entry(self, dataset: DSECDataset, item: Any, paths: dict[str, Checkpoints], position: int,
               folder: Path) -> dict[str, Any]:
        clip = dataset.clip(item)
        fields = {"id": item.id, "split": clip.split, "duration": duration_label(clip.duration_ms),
                  "duration_ms": clip.duration_ms, "sequence": clip.sequence, "clip": clip.index,
                  "start_us": clip.start_us, "end_us": clip.end_us, "frames": len(clip.frames)}
        entry: dict[str, Any] = {"id": item.id}
        for key, output in PATH_KEYS.items():
            entry[key] = os.path.relpath(paths[output].paths[position], folder)
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
