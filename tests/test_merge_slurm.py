"""Adapters -> real SLURM array (runtime's image_stats stage) -> merge -> split, as a user runs them.

Each mini-dataset goes through `launch/run.py` on the one-node test cluster; the merge then joins the checkpoints
to the annotation rows. H36M runs twice, shards=1 and shards=3 (the latter merged by a SLURM job chained `afterok`
through merge_after=true), and the merged files must be byte-identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import SLURM_TEST_CLUSTER, launch
from data.minisets import MAKERS

from shardprep.runtime.npz import read_npz

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def run_stats(overrides: list[str], run_dir: Path, shards: int, *extra: str) -> list[str]:
    args = ["stage=image_stats", *overrides, f"out_dir={run_dir}", f"shards={shards}"]
    launch("run.py", *args, *SLURM_TEST_CLUSTER, *extra)
    return args


@pytest.mark.parametrize("kind", ["3dhp", "3dpw", "fit3d"])
def test_adapter_through_slurm_then_merge(kind: str, tmp_path: Path) -> None:
    overrides = MAKERS[kind](tmp_path / kind)
    args = run_stats(overrides, tmp_path / "run", shards=2)
    launch("merge.py", *args)
    merged_dir = tmp_path / "run" / "merged"
    files = sorted(path.name for path in merged_dir.iterdir() if not path.name.startswith("."))
    splits = ["all"] if kind == "fit3d" else ["test", "train"]
    assert files == [f"{kind}_stats_{split}.npz" for split in splits]
    for split in splits:
        merged = read_npz(merged_dir / f"{kind}_stats_{split}.npz")
        n = len(merged["imgname"])
        assert merged["valid"].all() and merged["stats_mean"].shape == (n, 3)
        np.testing.assert_array_equal(merged["image_size"], np.full((n, 2), 128))
        # Row alignment: frames shift sideways with their frame number, so the per-row image means differ by row.
        frames = [int(name.rsplit("_", 1)[-1].split(".")[0].removeprefix("frame")) for name in merged["imgname"].tolist()]
        by_frame = {}
        for frame, mean in zip(frames, merged["stats_mean"]):
            by_frame.setdefault(frame, []).append(mean)
        means = {frame: np.stack(values) for frame, values in by_frame.items()}
        for values in means.values():  # the same frame of the photo gives the same statistics, whatever the row
            np.testing.assert_allclose(values, values[:1].repeat(len(values), 0), atol=1e-9)
        assert len({tuple(np.round(values[0], 6)) for values in means.values()}) == len(means)
    if kind == "fit3d":
        launch("split.py", *args)
        train = read_npz(merged_dir / "fit3d_stats_train.npz")
        assert {name[:3] for name in train["imgname"].tolist()} == {"s03", "s04"}


def test_h36m_shard_count_does_not_change_the_merged_bytes(tmp_path: Path) -> None:
    overrides = MAKERS["h36m"](tmp_path / "h36m")
    one = run_stats(overrides, tmp_path / "one", shards=1)
    launch("merge.py", *one)
    launch("merge.py", *one, "format=hdf5")
    three = run_stats(overrides, tmp_path / "three", 3, "merge_after=true", "workers=1")
    assert (tmp_path / "three/merged/h36m_stats_train.npz").is_file()  # written by the chained SLURM merge job
    launch("merge.py", *three, "format=hdf5")
    names = sorted(path.name for path in (tmp_path / "one/merged").iterdir() if not path.name.startswith("."))
    assert names == ["h36m_stats_test.h5", "h36m_stats_test.npz", "h36m_stats_train.h5", "h36m_stats_train.npz"]
    for name in names:
        assert (tmp_path / "one/merged" / name).read_bytes() == (tmp_path / "three/merged" / name).read_bytes(), name
