"""Merged files of a real depth run (`launch/depth.py stage=depth_demo`: seeded random RTMPose and Depth Anything on
the CPU; 3DHP as a real SLURM array, the others in the debug executor), each launched with the dataset's default
config, loaded the way an MMPose training config loads them: MMPose's own VideoPose3D config file, its dataset set to
MMPose's `Human36mDataset` (demo, H36M names; Fit3D as AugLift names its frames) or a class of shardprep.mmpose_ext
(3DHP as MMPose's converter writes it, in either joint order; 3DPW as AugLift names its frames) through
`custom_imports`, built by mmengine's `Runner.build_dataloader`, every sample through MMPose's pipeline (GenerateTarget
with the VideoPoseLifting codec, PackPoseInputs). The model inputs must be the run's checkpoints' keypoints of the
window's frames, the targets the annotation's 3D joints around the right root, the merged `part` the annotation's
(3DHP: in the class's joint order, mapped by the fixture's own joint names).

Camera files are written as MMPose's converters write them (preprocess_h36m.py: `(subject, camera id)` keys;
preprocess_mpi_inf_3dhp.py: `S1_Seq1_Cam0` / `TS1` keys); 3DPW has no converter, its files are keyed by scene;
Fit3D's by what `Human36mDataset` parses from its names.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import SLURM_TEST_CLUSTER, launch
from PIL import Image

from data.minisets import h36m_to_converter_order, make_3dhp, make_3dpw, make_fit3d

from shardprep.runtime.npz import read_npz

pytest.importorskip("mmpose", reason="mmpose is not installed (the models extra)")

# MMPose's VideoPose3D configs (shipped in the mmpose wheel): 27 frames centred, and one frame.
CONFIGS = {27: "video-pose-lift_tcn-27frm-supv_8xb128-160e_h36m.py",
           1: "video-pose-lift_tcn-1frm-supv-cpn-ft_8xb128-160e_h36m.py"}
# The index of the pelvis: 0 in H36M order; 14 in the 3DHP converter's order (MMPose's 3DHP metainfo, `root`).
H36M_ROOT, MPI_ROOT = 0, 14
# Converter (MPI) slot j holds H36M joint CONVERTER_FROM_H36M[j]: the fixture's own mapping, derived from joint names.
CONVERTER_FROM_H36M = h36m_to_converter_order(np.arange(17.0)[:, None])[:, 0].astype(int)


@dataclass(frozen=True)
class Case:
    dataset_class: str
    root: int
    in_mpi_order: bool  # the merged file keeps the 3DHP converter's joint order
    splits: tuple[str, ...]
    through_slurm: bool = False  # launched as a real SLURM array (the others: the in-process debug executor)


CASES = {
    "demo": Case("Human36mDataset", H36M_ROOT, False, ("",)),
    "3dhp": Case("ShardprepMPIINF3DHPDataset", H36M_ROOT, False, ("train", "test"), through_slurm=True),
    "3dhp_mpi": Case("ShardprepMPIINF3DHPMPIOrderDataset", MPI_ROOT, True, ("train", "test")),
    "3dpw": Case("Shardprep3DPWDataset", H36M_ROOT, False, ("train", "test")),
    "fit3d": Case("Human36mDataset", H36M_ROOT, False, ("all",)),
}


@dataclass(frozen=True)
class Run:
    kind: str
    case: Case
    data: Path  # the dataset's folder (annotations as the converter wrote them, frames)
    merged: Path
    checkpoints: dict[str, Path]  # file stem -> the depth stage's checkpoint of that frame

    def annotation(self, split: str) -> Path:
        return self.merged / f"{self.kind.split('_')[0]}_xycd{f'_{split}' if split else ''}.npz"


def video_key(kind: str, imgname: str) -> str:
    """The test's own reading of the names: the video a frame belongs to (3DPW: scene + participant)."""
    name = Path(imgname).name
    return name.rsplit("_frame" if kind == "3dpw" else "_", 1)[0]


def write_cameras(run: Run, path: Path) -> tuple[Path, tuple[int, int]]:
    """A camera file for every video of the merged files, keyed as the converter of the dataset keys it; the
    frames' (width, height), read from a frame."""
    width, height = Image.open(min(run.data.rglob("*.jpg"))).size
    cameras = {}
    for split in run.case.splits:
        for imgname in read_npz(run.annotation(split))["imgname"].tolist():
            name = Path(imgname).name
            if run.kind in ("demo", "fit3d"):  # Human36mDataset's lookup: (subject, text after the first `.` up to
                # `_`): S9_Demo_1.55011271_000001.jpg -> (S9, 55011271); Fit3D's s03_..._walk_the_box.mp4_000000.jpg
                # -> (s03, mp4): Fit3D has no converter and no camera file of MMPose's
                key = (name.split("_")[0], name.rsplit(".", 2)[1].split("_")[0])
            elif run.kind == "3dpw":  # courtyard_relaxOnBench_00_participant0_frame00000.jpg: the scene
                key = name.rsplit("_participant", 1)[0]
            else:  # S1_Seq1_Cam0_000001.jpg / TS1_000001.jpg
                key = name.rsplit("_", 1)[0]
            cameras[key] = dict(w=width, h=height, name=str(key))
    with open(path, "wb") as handle:
        pickle.dump(cameras, handle)
    return path, (width, height)


@pytest.fixture(scope="module")
def real_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """`real_runs(kind)`: launch/depth.py + launch/merge.py as a user runs them (once per kind and module), with the
    smallest wheel-shipped RTMPose config and a tiny random Depth Anything (the demo's models, at test cost)."""
    from models.depth_models import RTMPOSE_T, tiny_depth_anything

    done: dict[str, Run] = {}

    def real_run(kind: str) -> Run:
        if kind in done:
            return done[kind]
        base = tmp_path_factory.mktemp(kind)
        if kind == "demo":
            dataset, data, demo_root = ["dataset=demo"], base / "demo", base / "demo"
        else:  # 3DPW and Fit3D as AugLift names their frames (the default config detects the layout)
            make = {"3dpw": lambda root: make_3dpw(root, layout="auglift"), "fit3d": make_fit3d}.get(kind, make_3dhp)
            dataset, data, demo_root = make(base / "data"), base / "data", None
            if kind == "3dhp_mpi":
                dataset.append("dataset.joint_order=mpi")
        overrides = (*dataset, "stage=depth_demo", f"out_dir={base / 'run'}")
        if CASES[kind].through_slurm:
            request.getfixturevalue("slurm")  # skips where no cluster answers
        cluster = SLURM_TEST_CLUSTER if CASES[kind].through_slurm else ("cluster=debug",)
        launch("depth.py", *overrides, *cluster, "shards=2", f"stage.pose.config={RTMPOSE_T}",
               f"stage.depth.model={tiny_depth_anything(base / 'tiny-da')}", demo_root=demo_root)
        launch("merge.py", *overrides, demo_root=demo_root)
        checkpoints = {path.stem: path for path in (base / "run/checkpoints").rglob("*.npz")}
        done[kind] = Run(kind, CASES[kind], data, base / "run/merged", checkpoints)
        return done[kind]

    return real_run


def build_loader(run: Run, split: str, seq_len: int, cameras: Path):
    """MMPose's config file with only the data's places and the class changed, as a user's config would."""
    import mmpose
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmengine.utils import import_modules_from_strings

    config = Config.fromfile(Path(mmpose.__file__).parent / ".mim/configs/body_3d_keypoint/video_pose_lift/h36m" /
                             CONFIGS[seq_len])
    config.custom_imports = dict(imports=["shardprep.mmpose_ext.datasets"], allow_failed_imports=False)
    import_modules_from_strings(**config.custom_imports)  # what mmengine's Runner does with custom_imports
    init_default_scope(config.default_scope)
    loader = config.val_dataloader
    loader.update(num_workers=0, persistent_workers=False, batch_size=4)
    annotation = run.annotation(split)
    loader.dataset.update(type=run.case.dataset_class, data_root=str(run.merged), ann_file=annotation.name,
                          keypoint_2d_src="detection", keypoint_2d_det_file=f"{annotation.stem}_dets.npy",
                          camera_param_file=str(cameras))
    loader.dataset.pipeline[0].encoder.root_index = run.case.root
    return Runner.build_dataloader(loader)


@pytest.mark.parametrize("kind", [pytest.param(kind, marks=pytest.mark.slurm) if CASES[kind].through_slurm else kind
                                  for kind in sorted(CASES)])
@pytest.mark.parametrize("seq_len", sorted(CONFIGS))
def test_mmpose_config_loads_the_checkpoints_of_a_real_run(kind: str, seq_len: int, real_runs, tmp_path: Path) -> None:
    run = real_runs(kind)
    cameras, (width, height) = write_cameras(run, tmp_path / "cameras.pkl")
    for split in run.case.splits:
        loader = build_loader(run, split, seq_len, cameras)
        dataset = loader.dataset
        merged = read_npz(run.annotation(split))
        names = [Path(name).name for name in merged["imgname"].tolist()]
        assert len(dataset) == len(names) > 0  # every row is a sample: nothing dropped
        seen = 0
        for batch in loader:
            for inputs, sample in zip(batch["inputs"], batch["data_samples"]):
                window = [Path(p).name for p in dataset.get_data_info(sample.metainfo["id"])["img_paths"]]
                assert len(window) == seq_len and len({video_key(kind, name) for name in window}) == 1
                rows = [names.index(name) for name in window]
                assert rows == sorted(rows)  # frame order (padding repeats the first or last frame)
                predicted = np.stack([np.load(run.checkpoints[Path(name).stem])["keypoints"] for name in window])
                if run.case.in_mpi_order:
                    predicted = predicted[:, CONVERTER_FROM_H36M]
                normalised = (predicted - [width / 2, height / 2]) / (width / 2)
                # The TCN's input: rows joint-major (x, y), one column per frame.
                np.testing.assert_allclose(inputs.numpy(), normalised.transpose(1, 2, 0).reshape(-1, seq_len),
                                           rtol=1e-5, atol=1e-6)
                target = str(sample.metainfo["target_img_path"][0])
                assert Path(target).name == window[seq_len // 2]
                joints = annotation_row(run, split, Path(target).name, "S")[:, :3]
                np.testing.assert_allclose(sample.gt_instance_labels.lifting_target_label.numpy()[0],
                                           joints - joints[run.case.root], atol=1e-5)
                np.testing.assert_array_equal(merged["part"][names.index(Path(target).name)],
                                              annotation_row(run, split, Path(target).name, "part"))
                seen += 1
        assert seen == len(names)


def annotation_row(run: Run, split: str, imgname: str, key: str) -> np.ndarray:
    """The frame's joints (17, C) under `key` as the dataset's own annotation file holds them, in the class's order."""
    files = sorted(run.data.rglob("*.npz"))
    arrays = np.load(files[0] if len(files) == 1 else min(path for path in files if split in path.name))
    row = [Path(name).name for name in arrays["imgname"].tolist()].index(imgname)
    joints = arrays[key][row]
    if run.kind.startswith("3dhp") and not run.case.in_mpi_order:  # the converter's file is in MPI order
        joints = joints[np.argsort(CONVERTER_FROM_H36M)]
    return joints


def test_mpi_order_class_has_mmpose_3dhp_metainfo_matching_the_file(real_runs) -> None:
    """Flip pairs of the MPI-order class swap the left and right joints of the file's own `joint_names`; MMPose's 3DHP
    root (index 14) is the file's root."""
    from shardprep.mmpose_ext.datasets import ShardprepMPIINF3DHPMPIOrderDataset

    run = real_runs("3dhp_mpi")
    dataset = ShardprepMPIINF3DHPMPIOrderDataset(ann_file=str(run.annotation("train")), data_root="",
                                                 data_prefix=dict(img=""), pipeline=[], test_mode=True)
    names = read_npz(run.annotation("train"))["joint_names"].tolist()
    mirrored = [name.replace("left", "#").replace("right", "left").replace("#", "right") for name in names]
    assert dataset.metainfo["flip_indices"] == [names.index(name) for name in mirrored]
    assert dataset.metainfo["keypoint_id2name"][MPI_ROOT] == names[MPI_ROOT] == "root"
    assert dataset.metainfo["num_keypoints"] == len(names) == 17


@pytest.mark.parametrize(("kind", "wrong_class", "setting"), [
    ("3dhp_mpi", "ShardprepMPIINF3DHPDataset", "dataset.joint_order=h36m"),
    ("3dhp", "ShardprepMPIINF3DHPMPIOrderDataset", "dataset.joint_order=mpi"),
])
def test_a_file_of_the_other_joint_order_is_refused(kind: str, wrong_class: str, setting: str, real_runs) -> None:
    from mmpose.registry import DATASETS

    import shardprep.mmpose_ext.datasets  # noqa: F401 (registers the classes)

    run = real_runs(kind)
    with pytest.raises(ValueError, match=f"merge with {setting}"):
        DATASETS.build(dict(type=wrong_class, ann_file=str(run.annotation("train")), data_root="",
                            data_prefix=dict(img=""), pipeline=[], test_mode=True))


def test_rows_out_of_frame_order_are_refused(real_runs, tmp_path: Path) -> None:
    from shardprep.mmpose_ext.datasets import ShardprepMPIINF3DHPDataset

    rows = read_npz(real_runs("3dhp").annotation("train"))
    order = [1, 0, *range(2, len(rows["imgname"]))]
    np.savez(tmp_path / "shuffled.npz", **{k: v[order] if v.ndim and len(v) == len(order) and k != "joint_names" else v
                                          for k, v in rows.items()})
    with pytest.raises(ValueError, match="not in frame order at 'S1_Seq1_Cam0_000001.jpg'"):
        ShardprepMPIINF3DHPDataset(ann_file=str(tmp_path / "shuffled.npz"), data_root="", data_prefix=dict(img=""),
                                   seq_len=2, pipeline=[], test_mode=True)


def test_a_camera_file_without_the_video_is_refused_naming_it(real_runs, tmp_path: Path) -> None:
    from shardprep.mmpose_ext.datasets import ShardprepMPIINF3DHPDataset

    run = real_runs("3dhp")
    with open(tmp_path / "cameras_train.pkl", "wb") as handle:  # keyed as the converter keys it, one camera short
        pickle.dump({"S2_Seq1_Cam0": dict(w=128, h=128)}, handle)
    with pytest.raises(ValueError, match="has no camera 'S1_Seq1_Cam0' .*it holds e.g. \\['S2_Seq1_Cam0'\\]"):
        ShardprepMPIINF3DHPDataset(ann_file=str(run.annotation("train")), data_root="", data_prefix=dict(img=""),
                                   camera_param_file=str(tmp_path / "cameras_train.pkl"), pipeline=[], test_mode=True)
