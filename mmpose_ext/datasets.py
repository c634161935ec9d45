"""MMPose 1.x lifting datasets for the merged 3DHP and 3DPW XYCD files, registered in mmpose's DATASETS registry.

MMPose's `Human36mDataset` groups rows into videos by parsing `imgname` as H36M's `S1_Action.camera_frame`, which
3DHP (`S1_Seq1_Cam0_000001.jpg`, `TS1_000001.jpg`) and 3DPW (`<scene>_participant0_frame00000.jpg`) names do not
follow (`ValueError: not enough values to unpack`). These classes only replace that parse, so windows of `seq_len`
frames stay within one video (3DPW: one person's track) and follow the file's row order, which is checked to be frame
order. Everything else (keypoint_2d_det_file, camera files, pipelines) is MMPose's. In a config:

    custom_imports = dict(imports=['shardprep.mmpose_ext.datasets'], allow_failed_imports=False)
    train_dataloader = dict(dataset=dict(type='ShardprepMPIINF3DHPDataset', ann_file='3dhp_xycd_train.npz', ...))

The metainfo is H36M's, so the merged file must hold H36M order (3DHP `dataset.joint_order=h36m`, the default); a
file whose `joint_names` say otherwise is refused.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
from mmpose.datasets import Human36mDataset
from mmpose.registry import DATASETS

from shardprep.datasets import joints


class _ParsedVideos(Human36mDataset):
    """Human36mDataset with the video parse of another naming: (subject, video, camera) and frame per imgname."""

    naming: re.Pattern[str]

    @classmethod
    def _video_and_frame(cls, imgname: str) -> tuple[tuple[str, str, str], int]:
        match = cls.naming.fullmatch(str(imgname).rsplit("/", 1)[-1])
        if match is None:
            raise ValueError(f"{cls.__name__}: imgname {imgname!r} does not follow its naming ({cls.naming.pattern})")
        groups = match.groupdict()
        return (groups["subject"], groups.get("video") or "", groups.get("camera") or ""), int(groups["frame"])

    @classmethod
    def _parse_h36m_imgname(cls, imgname) -> tuple[str, str, str]:  # noqa: ANN001 (MMPose's signature)
        return cls._video_and_frame(imgname)[0]

    def get_sequence_indices(self) -> list[list[int]]:
        names = self.ann_data["joint_names"] if "joint_names" in self.ann_data.files else None
        if names is not None and tuple(np.asarray(names).tolist()) != joints.H36M:
            raise ValueError(f"{type(self).__name__}: the file's joints are in another order than H36M's ({list(names)[:3]}...): "
                             "merge with dataset.joint_order=h36m for this class")
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
    """Merged 3DHP files: `S1_Seq1_Cam0_000001.jpg` (one video per subject, sequence, camera) or `TS1_000001.jpg`."""

    naming = re.compile(r"(?P<subject>T?S\d+)(?:_(?P<video>Seq\d+)_Cam(?P<camera>\d+))?_(?P<frame>\d+)\.\w+")


@DATASETS.register_module()
class Shardprep3DPWDataset(_ParsedVideos):
    """Merged 3DPW files: `<scene>_participant<K>_frame<NNNNN>.jpg`; one video = one person's track in a scene."""

    naming = re.compile(r"(?P<subject>.+)_(?P<video>participant\d+)_frame(?P<frame>\d+)\.\w+")
