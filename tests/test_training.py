"""shardprep.training on a merged demo split made by the project's own launch + merge (depth_demo, random weights):
windows equal MMPose's `Human36mDataset` windows, samples equal the file's rows (DataLoader dataset and GPU-resident
loader, here on the CPU), normalisation round-trips, and the loader refuses a split that does not fit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import launch

from shardprep.datasets.h36m import H36MAnnotation
from shardprep.merge import hdf5
from shardprep.merge.package_hdf5 import STATS_FILE, RunningStats
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import read_npz
from shardprep.training import XYCD, GPULoader, WindowDataset, Windows, merged_split
from shardprep.training.external import external_split
from shardprep.training.table import normalize_2d, unnormalize_2d

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mmpose") is None, reason="mmpose not installed")

FIELDS = (*XYCD, "S", "image_size")


@pytest.fixture(scope="module")
def demo_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo_xycd.npz (+ _dets.npy) of a 3-video demo, through launch/depth.py cluster=local and launch/merge.py."""
    from models.depth_models import RTMPOSE_T, tiny_depth_anything

    folder = tmp_path_factory.mktemp("training")
    depth = tiny_depth_anything(folder / "tiny-da")
    run = ("dataset=demo", "dataset.sequences=3", "dataset.frames_per_sequence=7", "stage=depth_demo",
           f"out_dir={folder / 'run'}")
    launch("depth.py", *run, "shards=2", "cluster=local", f"stage.depth.model={depth}", f"stage.pose.config={RTMPOSE_T}",
           demo_root=folder / "demo")
    launch("merge.py", *run, demo_root=folder / "demo")
    launch("merge.py", *run, "format=hdf5", demo_root=folder / "demo")
    return folder / "run" / "merged" / "demo_xycd.npz"


def mmpose_windows(path: Path, **options) -> list[dict]:
    from mmpose.datasets import Human36mDataset

    dataset = Human36mDataset(ann_file=str(path), keypoint_2d_src="detection",
                              keypoint_2d_det_file=str(path.with_name(path.stem + "_dets.npy")), **options)
    return [dataset.get_data_info(i) for i in range(len(dataset))]


@pytest.mark.parametrize(("windows", "options"), [
    (Windows(1), dict(seq_len=1)),
    (Windows(3), dict(seq_len=3)),
    (Windows(4, step=2, target="middle"), dict(seq_len=4, seq_step=2, causal=False)),
    (Windows(5, pad=True, target="middle"), dict(seq_len=5, pad_video_seq=True, causal=False)),
    (Windows(9, pad=True), dict(seq_len=9, pad_video_seq=True, causal=True)),
    (Windows(3, step=3, pad=True, target="middle"), dict(seq_len=3, seq_step=3, pad_video_seq=True, causal=False)),
    (Windows(27, pad=True, target="middle"), dict(seq_len=27, pad_video_seq=True, causal=False)),
    (Windows(4, stride=2, target="all"), dict(seq_len=1, multiple_target=4, multiple_target_step=2)),
])
def test_windows_equal_mmpose_human36m(demo_split: Path, windows: Windows, options: dict) -> None:
    table = merged_split(demo_split, FIELDS, pattern=H36MAnnotation.pattern)
    ours = WindowDataset(table, windows)
    theirs = mmpose_windows(demo_split, **options)
    assert len(ours) == len(theirs) > 0
    for sample, info in zip(ours, theirs):
        assert sample["row"].tolist() == list(info["img_ids"])
        np.testing.assert_array_equal(sample["predicted_keypoints"].numpy(), info["keypoints"])
        np.testing.assert_allclose(sample["predicted_keypoints_score"].numpy(), info["keypoints_visible"])
        target = sample["S"].numpy()[..., :3][windows.target_index()].reshape(info["lifting_target"].shape)
        expected = info["lifting_target"] - info["lifting_target"][..., :1, :]  # root-relative, root = joint 0
        np.testing.assert_allclose(target, expected, atol=1e-5)


def test_every_sample_equals_the_file_rows_in_both_loaders(demo_split: Path) -> None:
    arrays = read_npz(demo_split)
    table = merged_split(demo_split, FIELDS, pattern=H36MAnnotation.pattern, root_relative=False)
    frames = WindowDataset(table)
    assert sorted(int(frames[i]["row"]) for i in range(len(frames))) == list(range(len(arrays["imgname"])))
    for i in range(len(frames)):
        sample = frames[i]
        for name in FIELDS:
            np.testing.assert_array_equal(sample[name].numpy(), arrays[name][int(sample["row"])])
        assert bool(sample["valid"]) == bool(arrays["valid"][int(sample["row"])])
    windows = Windows(5, pad=True, target="middle")
    dataset = WindowDataset(table, windows)
    loader = GPULoader(table, windows, batch_size=4, device="cpu", dtype=None, shuffle=True, seed=3)
    seen = []
    for batch in loader:
        for j, row in enumerate(batch["row"]):
            for name in FIELDS:
                np.testing.assert_array_equal(batch[name][j].numpy(), arrays[name][row.numpy()])
            seen.append(tuple(row.tolist()))
    assert sorted(seen) == sorted(tuple(dataset[i]["row"].tolist()) for i in range(len(dataset)))
    again = [tuple(row.tolist()) for batch in GPULoader(table, windows, batch_size=4, device="cpu", dtype=None, seed=3)
             for row in batch["row"]]
    assert again == seen  # seeded shuffling
    half = next(iter(GPULoader(table, windows, batch_size=4, device="cpu")))
    assert half["predicted_keypoints"].dtype == torch.bfloat16 and half["image_size"].dtype == torch.int32
    assert half["valid"].dtype == torch.bool


def test_hdf5_split_gives_the_npz_samples(demo_split: Path) -> None:
    windows = Windows(5, pad=True, target="middle")
    from_npz = WindowDataset(merged_split(demo_split, FIELDS, pattern=H36MAnnotation.pattern), windows)
    from_h5 = WindowDataset(merged_split(demo_split.with_suffix(".h5"), FIELDS, pattern=H36MAnnotation.pattern), windows)
    assert len(from_npz) == len(from_h5)
    for a, b in zip(from_npz, from_h5):
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_root_comes_from_the_files_joint_names(demo_split: Path, tmp_path: Path) -> None:
    from mmpose.datasets import Human36mDataset  # noqa: F401  (MMPose's H36M names, as merged files carry them)
    from mmengine.config import Config

    names = [Config.fromfile(_h36m_meta())["dataset_info"]["keypoint_info"][i]["name"] for i in range(17)]
    arrays = read_npz(demo_split)
    order = [*range(1, 15), 0, 15, 16]  # the root moved to index 14, as in MPI order
    arrays["S"] = arrays["S"][:, order]
    arrays["joint_names"] = np.array([names[i] for i in order])
    path = tmp_path / "demo_xycd.npz"
    np.savez(path, **arrays)
    relative = merged_split(path, ("S",), pattern=H36MAnnotation.pattern).arrays["S"]
    assert not relative[:, 14, :3].any() and relative[:, 0, :3].any()
    unnamed = merged_split(path, ("S",), pattern=H36MAnnotation.pattern, root_index=3)  # names win over root_index
    np.testing.assert_array_equal(unnamed.arrays["S"], relative)


def _h36m_meta() -> str:
    import mmpose

    return str(Path(mmpose.__file__).parent / ".mim/configs/_base_/datasets/h36m.py")


def test_invalid_rows_are_dropped_or_masked(demo_split: Path, tmp_path: Path) -> None:
    arrays = read_npz(demo_split)
    arrays["valid"][[0, 8]] = False
    path = tmp_path / "demo_xycd.npz"
    np.savez(path, **arrays)
    table = merged_split(path, FIELDS, pattern=H36MAnnotation.pattern)
    assert len(WindowDataset(table, invalid="drop")) == len(arrays["valid"]) - 2
    masked = WindowDataset(table, Windows(3, pad=True, target="middle"), invalid="mask")
    dropped = WindowDataset(table, Windows(3, pad=True, target="middle"), invalid="drop")
    assert len(masked) - len(dropped) == 2
    assert all(bool(sample["valid"][1]) for sample in dropped)
    assert not all(bool(sample["valid"].all()) for sample in dropped)  # context frames may be invalid: masked


def test_2d_normalisation_round_trips(demo_split: Path) -> None:
    arrays = read_npz(demo_split)
    table = merged_split(demo_split, ("predicted_keypoints",), pattern=H36MAnnotation.pattern,
                         normalize=("predicted_keypoints",))
    frames = WindowDataset(table)
    for i in range(len(frames)):
        sample = frames[i]
        size = arrays["image_size"][int(sample["row"])]
        back = unnormalize_2d(sample["predicted_keypoints"].numpy(), size)
        np.testing.assert_allclose(back, arrays["predicted_keypoints"][int(sample["row"])], rtol=1e-5, atol=1e-3)
    size = np.array([[1002, 1000]])
    np.testing.assert_allclose(normalize_2d(np.array([[[500.0, 501.0], [1000.0, 0.0]]]), size),
                               [[[0, 0], [1, -501 / 500]]])


def test_external_packaging_is_normalised_on_load_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    name = "external_wilor/hands/keypoints"
    videos = {"train__a": ("train", 40), "train__b": ("train", 25), "val__c": ("val", 10)}
    stats, written = RunningStats(), {}
    for item, (group, frames) in videos.items():  # as merge/package_hdf5.py writes them
        values = rng.normal(3.0, 2.0, (frames, 21, 3)).astype(np.float32)
        tracks = rng.normal(size=(frames, 5, 2)).astype(np.float32)
        hdf5.write(tmp_path / f"{item}.h5", {name: values, "external_tapip3d/tracks/tracks": tracks},
                   {"item": item, "group": group})
        written[item] = values
        if group == "train":
            stats.add(values)
    (tmp_path / STATS_FILE).write_text(yaml.safe_dump({"train_groups": ["train"], "arrays": {name: stats.as_dict()}}))
    table, loaded = external_split(tmp_path, [name, "external_tapip3d/tracks/tracks"], groups=["train"])
    assert table.videos == ["train__a", "train__b"] and len(table) == 65
    normalised = table.arrays[name]
    np.testing.assert_allclose(normalised.reshape(-1, 3).mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(normalised.reshape(-1, 3).std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(loaded[name].unnormalize(normalised), np.concatenate([written["train__a"], written["train__b"]]),
                               atol=1e-5)
    windows = WindowDataset(table, Windows(30))
    assert len(windows) == (40 - 29) + 0  # train__b (25 frames) has no 30-frame window: windows never cross a video
    (tmp_path / STATS_FILE).write_text(yaml.safe_dump({"arrays": {"external_vipe/camera/depth": stats.as_dict()}}))
    with pytest.raises(ConfigError, match="has no array 'external_vipe/camera/depth' \\(named in normalization_stats"):
        external_split(tmp_path, [name])


def test_loader_refuses_a_split_that_does_not_fit(demo_split: Path) -> None:
    table = merged_split(demo_split, FIELDS, pattern=H36MAnnotation.pattern)
    windows = Windows(27, pad=True, target="middle")
    needed = GPULoader(table, windows, batch_size=8, device="cpu").needed
    frame_bytes = sum(values[0].nbytes // (2 if values.dtype.kind == "f" and values.dtype.itemsize == 4 else 1)
                      for values in table.arrays.values())
    assert needed > len(table) * frame_bytes
    GPULoader(table, windows, batch_size=8, device="cpu", memory_limit=needed)
    with pytest.raises(ConfigError) as refused:
        GPULoader(table, windows, batch_size=8, device="cpu", memory_limit=needed - 1)
    message = str(refused.value)
    assert "\n" not in message and "GiB on cpu" in message and "batch_size" in message
    assert GPULoader(table, windows, batch_size=8, device="cpu", dtype=None).needed > needed  # fp32 needs more
