"""Merge of depth checkpoints into XYCD NPZ / HDF5: alignment, determinism, incomplete runs, dispatch (no SLURM).

Runs are written by tests/data/fake_runs.py (depth-stage schema, no models), on the synthetic H36M mini-dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import launch
from data.fake_runs import fake_depth_run
from data.minisets import make_h36m

from shardprep.merge import reader
from shardprep.merge.layout import Layout
from shardprep.merge.job import run_merge
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import read_npz, write_npz

PREDICTED = {
    "predicted_keypoints": ((17, 2), np.float32),
    "predicted_keypoints_score": ((17,), np.float32),
    "predicted_depth_point": ((17,), np.float32),
    "predicted_depth_min": ((17,), np.float32),
    "predicted_depth_max": ((17,), np.float32),
    "valid": ((), np.bool_),
}


@pytest.fixture(scope="module")
def h36m(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_h36m(tmp_path_factory.mktemp("h36m") / "h36m")


def merged_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if not path.name.startswith(".")}


def test_xycd_rows_align_with_annotation(h36m: list[str], tmp_path: Path) -> None:
    undetected = "S9_Walking_1.54138969_000002"
    args = fake_depth_run(tmp_path / "run", h36m, shards=2, undetected=[undetected])
    written = run_merge(args)
    out = tmp_path / "run" / "merged"
    assert sorted(path.name for path in written) == [
        "h36m_xycd_test.npz", "h36m_xycd_test_dets.npy", "h36m_xycd_train.npz", "h36m_xycd_train_dets.npy"]
    for split in ("train", "test"):
        merged = read_npz(out / f"h36m_xycd_{split}.npz")
        annotation = read_npz(Path(h36m[1].split("=", 1)[1]) / f"annotation_body3d/fps10/h36m_{split}.npz")
        for key, values in annotation.items():  # every annotation key, unchanged
            np.testing.assert_array_equal(merged[key], values)
        n = len(annotation["imgname"])
        for key, (shape, dtype) in PREDICTED.items():
            assert merged[key].shape == (n, *shape) and merged[key].dtype == dtype, key
        np.testing.assert_allclose(merged["predicted_keypoints"], annotation["part"][..., :2], rtol=1e-6)
        expected_valid = np.array([undetected not in name for name in annotation["imgname"]])
        np.testing.assert_array_equal(merged["valid"], expected_valid)
        dets = np.load(out / f"h36m_xycd_{split}_dets.npy", allow_pickle=False)
        assert dets.shape == (n, 17, 3) and dets.dtype == np.float32
        np.testing.assert_array_equal(dets[..., :2], merged["predicted_keypoints"])
        np.testing.assert_array_equal(dets[..., 2], merged["predicted_keypoints_score"])


def test_bytes_do_not_depend_on_shards_or_workers(h36m: list[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "CHUNK", 2)  # several chunks, so workers=2 really goes through the pool
    results = []
    for shards, workers in ((1, 1), (3, 2)):
        args = fake_depth_run(tmp_path / f"run{shards}", h36m, shards=shards)
        run_merge([*args, f"workers={workers}"])
        run_merge([*args, f"workers={workers}", "format=hdf5"])
        results.append(merged_bytes(tmp_path / f"run{shards}" / "merged"))
    assert sorted(results[0]) == sorted(results[1]) and len(results[0]) == 6
    assert results[0] == results[1]


def test_hdf5_holds_the_npz_arrays_and_provenance(h36m: list[str], tmp_path: Path) -> None:
    args = fake_depth_run(tmp_path / "run", h36m, shards=2)
    run_merge(args)
    run_merge([*args, "format=hdf5"])
    merged = read_npz(tmp_path / "run/merged/h36m_xycd_train.npz")
    assert str(merged.pop("fingerprint")) == "fake-depth-run"  # the NPZ says which run made it; HDF5 in its attributes
    names, units = merged.pop("joint_names").tolist(), json.loads(str(merged.pop("units")))
    with h5py.File(tmp_path / "run/merged/h36m_xycd_train.h5") as handle:
        assert json.loads(handle.attrs["joint_names"]) == names and json.loads(handle.attrs["units"]) == units
        assert sorted(handle) == sorted(merged)
        for key, values in merged.items():
            stored = handle[key].asstr()[()] if values.dtype.kind == "U" else handle[key][()]
            np.testing.assert_array_equal(stored, values)
            assert handle[key].chunks is not None and handle[key].compression == "gzip"
        assert handle.attrs["fingerprint"] == "fake-depth-run" and handle.attrs["split"] == "train"
        assert list(handle.attrs) == sorted(handle.attrs)


def test_incomplete_run_is_refused_then_merged_with_allow_partial(h36m: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = fake_depth_run(run, h36m, shards=3)
    missing = sorted(run.glob("checkpoints/shard-00001/*.npz"))[:2]
    for path in missing:
        path.unlink()
    with pytest.raises(ConfigError) as refused:
        run_merge(args)
    message = str(refused.value)
    assert "2 of 12 items" in message and "allow_partial=true" in message
    assert f"shard 1: 2 missing ({missing[0].stem}, {missing[1].stem})" in message
    assert f"launch/status.py dataset=h36m stage=depth out_dir={run} resubmit=true" in message
    assert not (run / "merged").exists()

    corrupt = next(run.glob("checkpoints/shard-00002/*.npz"))
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    run_merge([*args, "allow_partial=true"])
    rows = {}
    for split in ("train", "test"):
        merged = read_npz(run / f"merged/h36m_xycd_{split}.npz")
        for name, valid, keypoints in zip(merged["imgname"], merged["valid"], merged["predicted_keypoints"]):
            rows[Path(name).stem] = (bool(valid), bool(keypoints.any()))
    for path in [*missing, corrupt]:
        assert rows[path.stem] == (False, False)
    assert sum(valid for valid, _ in rows.values()) == 9


def test_unreadable_or_stale_checkpoints_are_not_merged(h36m: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = fake_depth_run(run, h36m, shards=1)
    corrupt, stale, flipped = sorted(run.glob("checkpoints/shard-00000/*.npz"))[:3]
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    arrays = read_npz(stale)
    arrays["fingerprint"] = np.array("older-run")
    write_npz(stale, arrays)
    # One bit of a payload: same layout as the others (fast path), caught by the member's CRC-32.
    data = bytearray(flipped.read_bytes())
    data[Layout.of(flipped, ["keypoints"]).members["keypoints"].data] ^= 1
    flipped.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as refused:
        run_merge(args)
    # All three fail the shards' own validation, what status and a resume count: the merge agrees with them.
    assert (f"shard 0: 3 truncated, of other arrays or of another run ({corrupt.stem}, {stale.stem}, "
            f"{flipped.stem})") in str(refused.value)


def test_merge_is_chosen_by_the_runs_stage(h36m: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = fake_depth_run(run, h36m, shards=1)
    manifest = run / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"name": "depth"', '"name": "nomerge"'))
    with pytest.raises(ConfigError, match="merge/nomerge.*available:.*depth.*image_stats"):
        run_merge(args)
    done = launch("merge.py", *args, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "merge/nomerge" in done.stderr


def test_bad_format_and_no_run(h36m: list[str], tmp_path: Path) -> None:
    args = fake_depth_run(tmp_path / "run", h36m, shards=1)
    with pytest.raises(ConfigError, match="format='npy': use one of xycd, hdf5"):
        run_merge([*args, "format=npy"])
    with pytest.raises(ConfigError, match="no run at"):
        run_merge([*h36m, f"out_dir={tmp_path / 'nothing'}"])


def test_merge_after_runs_the_merge_once_the_shards_are_done(h36m: list[str], tmp_path: Path) -> None:
    launch("run.py", "stage=image_stats", *h36m, "cluster=debug", "shards=2", f"out_dir={tmp_path / 'run'}",
           "merge_after=true")
    merged = read_npz(tmp_path / "run/merged/h36m_stats_test.npz")
    assert merged["valid"].all() and merged["stats_mean"].shape == (6, 3)


def test_merge_without_a_stage_takes_the_datasets_only_run(h36m: list[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`launch/merge.py dataset=X` with no stage: the depth run if there is one, else the dataset's only run (as
    DSEC's events run), else an error naming the runs there."""
    monkeypatch.setenv("SHARDPREP_OUTPUT", str(tmp_path))
    launch("run.py", "stage=image_stats", *h36m, "cluster=debug")
    merged = run_merge(h36m)
    assert sorted(path.name for path in merged) == ["h36m_stats_test.npz", "h36m_stats_train.npz"]
    assert {path.parent for path in merged} == {tmp_path / "h36m" / "image_stats" / "merged"}
    (tmp_path / "h36m" / "other").mkdir()
    shutil.copy(tmp_path / "h36m" / "image_stats" / "manifest.json", tmp_path / "h36m" / "other")
    with pytest.raises(ConfigError, match=r"stages \['image_stats', 'other'\]: name one with stage=<name>"):
        run_merge(h36m)


def test_merged_files_name_their_joints_and_units(h36m: list[str], tmp_path: Path) -> None:
    pytest.importorskip("mmpose", reason="mmpose is not installed (the models extra)")
    from mmpose.datasets import Human36mDataset

    args = fake_depth_run(tmp_path / "run", h36m, shards=1)
    run_merge(args)
    run_merge([*args, "format=hdf5"])
    merged = read_npz(tmp_path / "run/merged/h36m_xycd_test.npz")
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    # MMPose's own H36M joint list, the order its configs assume.
    names = parse_pose_metainfo(Human36mDataset.METAINFO)["keypoint_id2name"]
    expected = [names[i] for i in range(17)]
    assert merged["joint_names"].tolist() == expected
    units = json.loads(str(merged["units"]))
    assert units["S"].startswith("m ") and units["part"].startswith("px") and units["predicted_depth_point"].startswith("m")
    with h5py.File(tmp_path / "run/merged/h36m_xycd_test.h5") as handle:
        assert json.loads(handle.attrs["joint_names"]) == expected and json.loads(handle.attrs["units"]) == units


def test_counts_per_split_and_drop_invalid(h36m: list[str], tmp_path: Path) -> None:
    pytest.importorskip("mmpose", reason="mmpose is not installed (the models extra)")
    from mmpose.datasets import Human36mDataset

    run = tmp_path / "run"
    args = fake_depth_run(run, h36m, shards=1, undetected=["S9_Walking_1.54138969_000002"])
    next(run.glob("checkpoints/shard-00000/S11_Walking_1.54138969_000003.npz")).unlink()
    done = launch("merge.py", *args, "allow_partial=true")
    assert "merge h36m test: 6 rows: 4 valid, 1 undetected, 1 missing" in done.stdout
    assert "merge h36m train: 6 rows: 6 valid, 0 undetected, 0 missing" in done.stdout
    assert "drop_invalid=true" in done.stdout
    full = read_npz(run / "merged/h36m_xycd_test.npz")
    done = launch("merge.py", *args, "allow_partial=true", "drop_invalid=true")
    assert "the 2 invalid rows are left out" in done.stdout
    kept = read_npz(run / "merged/h36m_xycd_test.npz")
    for key in full:
        if full[key].ndim and len(full[key]) == 6 and key != "joint_names":
            np.testing.assert_array_equal(kept[key], full[key][full["valid"]])
    dets = np.load(run / "merged/h36m_xycd_test_dets.npy")
    assert kept["valid"].all() and len(dets) == len(kept["imgname"]) == 4
    loaded = Human36mDataset(ann_file=str(run / "merged/h36m_xycd_test.npz"), data_root="", data_prefix=dict(img=""),
                             seq_len=1, causal=True, keypoint_2d_src="detection", pipeline=[], test_mode=True,
                             keypoint_2d_det_file=str(run / "merged/h36m_xycd_test_dets.npy"))
    assert len(loaded) == 4  # every row MMPose keeps is one of ours: nothing dropped behind the user's back
