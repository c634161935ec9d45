"""launch/split.py: train/test by subject lists, every array (and the dets twin) masked alike."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest

from conftest import launch
from data.fake_runs import fake_depth_run
from data.minisets import make_3dpw, make_fit3d

from shardprep.merge.job import run_merge
from shardprep.datasets.fit3d import Fit3DAnnotation
from shardprep.merge.split import concatenate, masks
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import read_npz


def subject_of(imgname: str) -> str:
    """The test's own reading of AugLift's Fit3D names: the subject is `sNN` before the first `_`."""
    return Path(imgname).name.split("_", 1)[0]


def test_fit3d_split_by_subject(tmp_path: Path) -> None:
    args = fake_depth_run(tmp_path / "run", make_fit3d(tmp_path / "fit3d"), shards=2)
    run_merge(args)
    done = launch("split.py", *args)
    assert "fit3d_xycd_train.npz (6 rows)" in done.stdout and "fit3d_xycd_test.npz (6 rows)" in done.stdout
    out = tmp_path / "run" / "merged"
    whole = read_npz(out / "fit3d_xycd_all.npz")
    for subset, subjects in {"train": {"s03", "s04"}, "test": {"s10", "s11"}}.items():
        part = read_npz(out / f"fit3d_xycd_{subset}.npz")
        assert {subject_of(name) for name in part["imgname"].tolist()} == subjects
        keep = np.isin([subject_of(name) for name in whole["imgname"].tolist()], sorted(subjects))
        assert sorted(part) == sorted(whole)
        for key in whole:  # every per-row array masked alike; the per-file values (fingerprint, joints) kept as they are
            per_file = key in ("fingerprint", "joint_names", "units")
            np.testing.assert_array_equal(part[key], whole[key] if per_file else whole[key][keep])
        assert str(part["fingerprint"]) == json.loads((tmp_path / "run" / "manifest.json").read_text())["fingerprint"]
        dets = np.load(out / f"fit3d_xycd_{subset}_dets.npy", allow_pickle=False)
        np.testing.assert_array_equal(dets[..., :2], part["predicted_keypoints"])


def test_arrays_without_one_entry_per_row_are_refused() -> None:
    names = np.array(["s03_a_b.mp4_000001.jpg", "s10_a_b.mp4_000001.jpg"])
    with pytest.raises(ConfigError, match="x.npz: array 'mean_pose' has shape \\(17, 3\\), not one entry per row"):
        concatenate([("x.npz", {"imgname": names, "mean_pose": np.zeros((17, 3))})])
    with pytest.raises(ConfigError, match="subject 's03' is in both 'train' and 'test'"):
        masks(names, {"train": ["s03"], "test": ["s03", "s10"]}, subject_of)


def test_subjects_come_from_the_adapters_parse(tmp_path: Path) -> None:
    """A subject is what the adapter's own naming says, not the text before the first `_` of any name."""
    adapter = Fit3DAnnotation("fit3d", str(tmp_path / "x.npz"), str(tmp_path))
    names = np.array(["s03_50591643-0_walk.mp4_000001.jpg", "s10_50591643-0_walk.mp4_000001.jpg"])
    selected = masks(names, {"train": ["s03"], "test": ["s10"]}, adapter.subject_of)
    assert selected["train"].tolist() == [True, False] and selected["test"].tolist() == [False, True]
    with pytest.raises(ValueError, match="does not follow the fit3d naming"):
        masks(np.array(["s03-walk.jpg"]), {"train": ["s03"]}, adapter.subject_of)


def test_dataset_without_subjects_is_refused(tmp_path: Path) -> None:
    args = fake_depth_run(tmp_path / "run", make_3dpw(tmp_path / "3dpw"), shards=1)
    run_merge(args)
    done = launch("split.py", *args, check=False)
    assert done.returncode == 2 and "has no subject lists" in done.stderr


def test_demo_splits_into_train_and_test_as_the_readme_says(tmp_path: Path, demo_root: Path) -> None:
    """The README's demo: depth_demo run, merge, split: both subsets non-empty, each of its own subject."""
    run = ("dataset=demo", "stage=depth_demo", "dataset.frames_per_sequence=2", f"out_dir={tmp_path / 'run'}")
    launch("depth.py", *run, "cluster=debug", demo_root=demo_root)
    launch("merge.py", *run, demo_root=demo_root)
    done = launch("split.py", *run, demo_root=demo_root)
    merged = read_npz(tmp_path / "run" / "merged" / "demo_xycd.npz")
    rows = {}
    for subset, subject in (("train", "S1"), ("test", "S9")):
        part = read_npz(tmp_path / "run" / "merged" / f"demo_xycd_{subset}.npz")
        assert f"demo_xycd_{subset}.npz ({len(part['imgname'])} rows)" in done.stdout
        assert len(part["imgname"]) == 2 and {name.split("/")[0] for name in part["imgname"].tolist()} == {subject}
        assert str(part["environments"]) == str(merged["environments"])  # per-file provenance kept by each subset
        rows.update(zip(part["imgname"].tolist(), part["predicted_depth_point"]))
    assert sorted(rows) == sorted(merged["imgname"].tolist())
    for name, depth in zip(merged["imgname"].tolist(), merged["predicted_depth_point"]):
        assert np.array_equal(rows[name], depth)


def test_demo_of_an_older_layout_is_not_reused(tmp_path: Path) -> None:
    from shardprep.datasets.demo import DemoDataset

    old = tmp_path / "2x6" / "annotation_body3d" / "fps50"  # where a demo of the single-subject version lived
    old.mkdir(parents=True)
    (old / "h36m_demo.npz").write_bytes(b"an older demo")
    demo = DemoDataset("demo", str(tmp_path))
    demo.validate()
    assert demo.root != tmp_path / "2x6" and demo.root.parent == tmp_path
    assert {demo.subject_of(name) for name in demo.arrays["imgname"].tolist()} == {"S1", "S9"}
