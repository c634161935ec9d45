"""The MMPose dataset classes for merged 3DHP and 3DPW files: registered through custom_imports, windows of one video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.fake_runs import fake_depth_run
from data.minisets import make_3dhp, make_3dpw

from shardprep.merge.job import run_merge
from shardprep.runtime.npz import read_npz

pytest.importorskip("mmpose", reason="mmpose is not installed (the models extra)")

CASES = {"3dhp": (make_3dhp, "ShardprepMPIINF3DHPDataset"), "3dpw": (make_3dpw, "Shardprep3DPWDataset")}


def video_of(kind: str, imgname: str) -> str:
    """The test's own reading of the names: everything before the frame number (3DPW: scene + participant)."""
    return imgname.rsplit("_frame" if kind == "3dpw" else "_", 1)[0]


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for kind, (make, _) in CASES.items():
        base = tmp_path_factory.mktemp(kind)
        run_merge(fake_depth_run(base / "run", make(base / kind), shards=1))
        out[kind] = base / "run/merged"
    return out


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("seq_len", [1, 27])
def test_registered_class_loads_windows_within_one_video(kind: str, seq_len: int, merged: dict[str, Path]) -> None:
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    from mmpose.registry import DATASETS

    config = Config(dict(custom_imports=dict(imports=["shardprep.mmpose_ext.datasets"], allow_failed_imports=False)))
    import_modules_from_strings(**config.custom_imports)
    split = "test"
    ann = merged[kind] / f"{kind}_xycd_{split}.npz"
    dataset = DATASETS.build(dict(
        type=CASES[kind][1], ann_file=str(ann), data_root="", data_prefix=dict(img=""), seq_len=seq_len, causal=False,
        pad_video_seq=seq_len > 1, keypoint_2d_src="detection", keypoint_2d_det_file=str(ann.with_name(f"{ann.stem}_dets.npy")),
        pipeline=[], test_mode=True))
    rows = read_npz(ann)
    names = rows["imgname"].tolist()
    assert len(dataset) == len(names)
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        window = [names.index(Path(p).name) for p in info["img_paths"]] if "img_paths" in info else None
        assert info["keypoints"].shape == (seq_len, 17, 2)
        if window is not None:
            assert len({video_of(kind, names[i]) for i in window}) == 1 and window == sorted(window)
    np.testing.assert_allclose(dataset.get_data_info(0)["keypoints"][-1 if seq_len == 1 else seq_len // 2],
                               rows["predicted_keypoints"][0], rtol=1e-5)


def test_rows_out_of_frame_order_are_refused(merged: dict[str, Path], tmp_path: Path) -> None:
    from shardprep.mmpose_ext.datasets import ShardprepMPIINF3DHPDataset

    rows = read_npz(merged["3dhp"] / "3dhp_xycd_train.npz")
    order = [1, 0, *range(2, len(rows["imgname"]))]
    np.savez(tmp_path / "shuffled.npz", **{k: v[order] if v.ndim and len(v) == len(order) else v for k, v in rows.items()})
    with pytest.raises(ValueError, match="not in frame order at 'S1_Seq1_Cam0_000001.jpg'"):
        ShardprepMPIINF3DHPDataset(ann_file=str(tmp_path / "shuffled.npz"), data_root="", data_prefix=dict(img=""),
                                   seq_len=2, pipeline=[], test_mode=True)
