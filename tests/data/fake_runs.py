"""A finished depth run without models: manifest + per-item checkpoints in the depth stage's schema, for the merge's
and split's own tests, which need predictions they can predict (and undetected items). Loading merged files in MMPose
is tested on real depth runs (tests/test_mmpose_datasets.py), not on these.

The manifest is planned like a real launch (same item order, shard plan and digest); the "predictions" are each
row's own ground truth (keypoints = part[:, :2]), so a merged file is row-aligned exactly when
`predicted_keypoints == part[..., :2]`. `undetected` items get detected=False, as the depth stage writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shardprep.merge.rows import annotation_tables
from shardprep.runtime.build import build_dataset
from shardprep.runtime.config import load_config
from shardprep.runtime.manifest import Manifest, items_digest
from shardprep.runtime.npz import write_npz
from shardprep.runtime.run_folder import RunFolder
from shardprep.runtime.sharding import plan_shards
from shardprep.runtime.store import FINGERPRINT_KEY

FINGERPRINT = "fake-depth-run"


def depth_arrays(row: dict[str, np.ndarray], detected: bool) -> dict[str, np.ndarray]:
    keypoints = row["part"][:, :2].astype(np.float32)
    depth = np.linspace(3.0, 5.0, 17, dtype=np.float32) + float(row["center"][0]) / 1000
    return {
        "keypoints": keypoints,
        "scores": np.full(17, 0.9, np.float32),
        "depth_point": depth,
        "depth_min": depth - 0.1,
        "depth_max": depth + 0.1,
        "in_image": np.ones(17, bool),
        "bbox": np.array([*keypoints.min(0), *keypoints.max(0), 0.99], np.float32),
        "image_size": np.array([128, 128], np.int32),
        "detected": np.array(detected),
        "depth_radius": np.array(3, np.int32),
        FINGERPRINT_KEY: np.array(FINGERPRINT),
    }


def fake_depth_run(run_dir: Path, dataset_overrides: Sequence[str], shards: int,
                   undetected: Sequence[str] = ()) -> list[str]:
    """Write the run; return the merge command's overrides for it."""
    overrides = [*dataset_overrides, f"out_dir={run_dir}"]
    # The depth stage's own config (its random-weight demo models are never loaded: no task runs), so the merge
    # validates these files against the stage's declared outputs as it does a real run's.
    config = load_config([*overrides, "stage=depth_demo"])
    config["stage"]["name"] = "depth"
    dataset = build_dataset(config)
    items = dataset.items()
    plan = plan_shards(items, shards)
    RunFolder(run_dir).write_manifest(Manifest(config, plan, len(items), items_digest(items), FINGERPRINT, "test"))
    rows = annotation_tables(dataset)
    for shard, (start, end) in enumerate(plan):
        for item in items[start:end]:
            row = {key: values[item.index] for key, values in rows[item.group].items()}
            path = RunFolder(run_dir).shard_folder(shard) / f"{item.id}.npz"
            write_npz(path, depth_arrays(row, detected=item.id not in undetected))
    return [*overrides, "stage=depth"]
