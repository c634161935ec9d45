"""Fit3D in the AugLift naming: `sNN_<camera>_<action>.mp4_<frame>.jpg`, one annotation file for all subjects.

The frame number in `imgname` is one less than the extracted image's file index (AugLift's convention), hence
`frame_offset: 1`; the image file name is built by `image_pattern` (inferred). One sequence = one video. Train/test
are cut by subject afterwards (`launch/split.py`, subject lists in conf/dataset/fit3d.yaml).
"""

from __future__ import annotations

import re

from shardprep.datasets.imgname import ImgnameDataset
from shardprep.datasets.splits import SplitDataset


class Fit3DAnnotation(ImgnameDataset):
    pattern = re.compile(
        r"(?P<sequence>(?P<subject>s\d+)_(?P<camera>[^_]+)_(?P<action>.+))\.mp4_(?P<frame>\d+)\.\w+"
    )
    example = "s11_50591643-0_walk_the_box.mp4_002485.jpg"

    def __init__(self, name: str, annotation: str, image_root: str,
                 image_pattern: str = "{sequence}.mp4_{file_frame:06d}.jpg", frame_offset: int = 1) -> None:
        super().__init__(name, annotation, image_root, image_pattern, frame_offset)


class Fit3DDataset(SplitDataset):
    part = Fit3DAnnotation
