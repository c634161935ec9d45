"""3DPW in the AugLift naming: one annotation row per person and frame, `<sequence>_participant<K>_frame<NNNNN>.jpg`.

There is no upstream MMPose converter; AugLift's scripts write the annotation. The row's image is the sequence's
frame, `imageFiles/<sequence>/image_<NNNNN>.jpg` in the official release (layout `official`) or
`imageFiles/<sequence>/<sequence>_image_<NNNNN>.jpg` in AugLift's copies (layout `auglift`); `layout: auto` takes the
one under which every row's file exists. Both people of a frame share the image, so a sequence (not a person) is the
shard unit. Boxes come from the ground truth by default (AugLift's setting): the
2D keypoints' extent grown by `box_margin` px, clipped to the image; the payload says so with `use_gt_box`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from shardprep.datasets.base import Item
from shardprep.datasets.imgname import ImgnameDataset
from shardprep.datasets.layouts import Layout
from shardprep.datasets.splits import SplitDataset


class PW3DAnnotation(ImgnameDataset):
    pattern = re.compile(r"(?P<sequence>.+)_participant(?P<person>\d+)_frame(?P<frame>\d+)\.\w+")
    example = "courtyard_relaxOnBench_00_participant0_frame00000.jpg"
    layouts = {
        "official": Layout("official", "{sequence}/image_{file_frame:05d}.jpg"),
        "auglift": Layout("auglift", "{sequence}/{sequence}_image_{file_frame:05d}.jpg"),
    }

    def __init__(self, name: str, annotation: str, image_root: str, gt_boxes: bool = True, box_margin: float = 150.0,
                 **layout: Any) -> None:
        super().__init__(name, annotation, image_root, **layout)
        self.gt_boxes = gt_boxes
        self.box_margin = box_margin

    def read(self, item: Item) -> dict[str, Any]:
        payload = super().read(item)
        payload["bbox_gt"] = keypoint_box(payload["row"]["part"], payload["image"].shape[:2], self.box_margin)
        payload["use_gt_box"] = self.gt_boxes
        return payload


class PW3DDataset(SplitDataset):
    part = PW3DAnnotation


def keypoint_box(part: np.ndarray, image_size: tuple[int, int], margin: float) -> np.ndarray:
    """xyxy px: the extent of the visible 2D keypoints (all of them if none is marked visible) +- margin, clipped."""
    visible = part[:, 2] > 0
    points = part[visible if visible.any() else slice(None), :2]
    height, width = image_size
    low = np.maximum(points.min(axis=0) - margin, 0.0)
    high = np.minimum(points.max(axis=0) + margin, [width, height])
    return np.concatenate([low, high]).astype(np.float32)
