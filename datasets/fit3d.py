"""Fit3D in the AugLift naming: `sNN_<camera>_<action>.mp4_<frame>.jpg`, one annotation file for all subjects.

MMPose has no Fit3D converter; AugLift's scripts write the annotation's imgname with the camera's `-0`
(`s11_50591643-0_walk_the_box.mp4_002485.jpg`) while its extracted frames drop it and number files frame + 1
(`s11_50591643_walk_the_box.mp4_002486.jpg`); later copies also drop `.mp4`, and its own merge tries the exact frame
number before + 1. Those variants are the known layouts; `layout: auto` takes the one under which every row's file
exists. One sequence = one video. Train/test are cut by subject afterwards (`launch/split.py`, conf/dataset/fit3d.yaml).
"""

from __future__ import annotations

import re

from shardprep.datasets.imgname import ImgnameDataset
from shardprep.datasets.layouts import Layout
from shardprep.datasets.splits import SplitDataset

_NAMES = {
    "auglift": "{subject}_{camera_id}_{action}.mp4_{file_frame:06d}.jpg",
    "auglift_no_mp4": "{subject}_{camera_id}_{action}_{file_frame:06d}.jpg",
    "imgname": "{sequence}.mp4_{file_frame:06d}.jpg",
}


class Fit3DAnnotation(ImgnameDataset):
    pattern = re.compile(
        r"(?P<sequence>(?P<subject>s\d+)_(?P<camera>(?P<camera_id>[^_-]+)[^_]*)_(?P<action>.+))\.mp4_(?P<frame>\d+)\.\w+"
    )
    example = "s11_50591643-0_walk_the_box.mp4_002485.jpg"
    layouts = {
        f"{name}{suffix}": Layout(f"{name}{suffix}", pattern, offset)
        for name, pattern in _NAMES.items()
        for suffix, offset in (("", 1), ("_exact", 0))
    }


class Fit3DDataset(SplitDataset):
    part = Fit3DAnnotation
