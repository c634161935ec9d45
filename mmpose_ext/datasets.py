"""MMPose 1.x lifting datasets for the merged 3DHP and 3DPW XYCD files, registered in mmpose's DATASETS registry.

MMPose's `Human36mDataset` groups rows into videos by parsing `imgname` as H36M's `S1_Action.camera_frame`, which
3DHP (`S1_Seq1_Cam0_000001.jpg`, `TS1_000001.jpg`) and 3DPW (`<scene>_participant0_frame00000.jpg`) names do not
follow (`ValueError: not enough values to unpack`). These classes only replace that parse, so windows of `seq_len`
frames stay within one video (3DPW: one person's track) and follow the file's row order, which is checked to be frame
order, and the camera lookup of `camera_param_file` (3DHP: the converter's `cameras_{train,test}.pkl`, keyed
`S1_Seq1_Cam0` / `TS1`). Everything else (keypoint_2d_det_file, pipelines, codecs) is MMPose's. In a config:

    custom_imports = dict(imports=['shardprep.mmpose_ext.datasets'], allow_failed_imports=False)
    train_dataloader = dict(dataset=dict(type='ShardprepMPIINF3DHPDataset', ann_file='3dhp_xycd_train.npz', ...))

Each class expects one joint order, named by the `dataset.joint_order` the file was merged with, and carries the
metainfo (names, flip pairs) of that order: H36M's for `ShardprepMPIINF3DHPDataset` and `Shardprep3DPWDataset`,
MMPose's 3DHP metainfo for `ShardprepMPIINF3DHPMPIOrderDataset`. A file whose `joint_names` say otherwise is refused.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import ClassVar

import numpy as np
from mmpose.datasets import Human36mDataset
from mmpose.registry import DATASETS

from shardprep.datasets import joints


class _ParsedVideos(Human36mDataset):
    """Human36mDataset with the video parse of another naming: (subject, video, camera) and frame per imgname."""

    naming: ClassVar[re.Pattern[str]]
    camera_group: ClassVar[str]  # the naming's group that keys `camera_param_file`
    joint_order: ClassVar[str] = "h36m"  # the dataset.joint_order (datasets/joints.py) the file must hold

    @classmethod
    def _match(cls, imgname: str) -> dict[str, str]:
        match = cls.naming.fullmatch(str(imgname).rsplit("/", 1)[-1])
        if match is None:
            raise ValueError(f"{cls.__name__}: imgname {imgname!r} does not follow its naming ({cls.naming.pattern})")
        return match.groupdict()

    @classmethod
    def _video_and_frame(cls, imgname: str) -> tuple[tuple[str, str, str], int]:
        groups = cls._match(imgname)
        return (groups["subject"], groups.get("video") or "", groups.get("camera") or ""), int(groups["frame"])

    @classmethod
    def _parse_h36m_imgname(cls, imgname) -> tuple[str, str, str]:  # noqa: ANN001 (MMPose's signature)
        return cls._video_and_frame(imgname)[0]

    def get_camera_param(self, imgname) -> dict:  # noqa: ANN001 (MMPose's signature)
        key = self._match(imgname)[self.camera_group]
        if key not in self.camera_param:
            raise ValueError(f"{type(self).__name__}: {self.camera_param_file} has no camera {key!r} (for "
                             f"{imgname!r}); it holds e.g. {sorted(self.camera_param)[:3]}")
        return self.camera_param[key]

    def get_sequence_indices(self) -> list[list[int]]:
        names = self.ann_data["joint_names"] if "joint_names" in self.ann_data.files else None
        expected = joints.ORDERS[self.joint_order]
        if names is not None and tuple(np.asarray(names).tolist()) != expected:
            held = next((order for order, listed in joints.ORDERS.items() if listed == tuple(names.tolist())), None)
            raise ValueError(f"{type(self).__name__}: the file's joints are in {held or 'another'} order "
                             f"({list(names)[:3]}...), this class reads {self.joint_order} order: merge with "
                             f"dataset.joint_order={self.joint_order}, or use the class for {held or 'that'} order")
        last: dict[tuple[str, str, str], int] = defaultdict(lambda: -1)
        for imgname in self.ann_data["imgname"].tolist():
            video, frame = self._video_and_frame(imgname)
            if frame <= last[video]:
                raise ValueError(f"{type(self).__name__}: rows of video {'_'.join(filter(None, video))} are not in frame "
                                 f"order at {imgname!r}: sort the file by frame")
            last[video] = frame
        return super().get_sequence_indices()


@DATASETS.register_module()
class ShardprepMPIINF3DHPDataset(_ParsedVideos):
    """Merged 3DHP files in H36M order (`dataset.joint_order=h36m`, the default): `S1_Seq1_Cam0_000001.jpg` (one
    video per subject, sequence, camera) or `TS1_000001.jpg`; cameras keyed as the converter keys them."""

    naming = re.compile(
        r"(?P<sequence>(?P<subject>T?S\d+)(?:_(?P<video>Seq\d+)_Cam(?P<camera>\d+))?)_(?P<frame>\d+)\.\w+")
    camera_group = "sequence"


@DATASETS.register_module()
class ShardprepMPIINF3DHPMPIOrderDataset(ShardprepMPIINF3DHPDataset):
    """Merged 3DHP files in the converter's MPI order (`dataset.joint_order=mpi`), with MMPose's 3DHP metainfo
    (names, flip pairs, skeleton), as MMPose's 3DHP settings (`root_index=14`) and the converter's stats expect."""

    METAINFO: ClassVar[dict] = dict(from_file="configs/_base_/datasets/mpi_inf_3dhp.py")
    joint_order = "mpi"


@DATASETS.register_module()
class Shardprep3DPWDataset(_ParsedVideos):
    """Merged 3DPW files: `<scene>_participant<K>_frame<NNNNN>.jpg`; one video = one person's track in a scene.
    3DPW has one (moving) camera per scene, so `camera_param_file` is keyed by the scene name."""

    naming = re.compile(r"(?P<subject>.+)_(?P<video>participant\d+)_frame(?P<frame>\d+)\.\w+")
    camera_group = "subject"
