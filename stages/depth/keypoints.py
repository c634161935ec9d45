"""COCO-17 keypoints (what RTMPose predicts) to H36M-17 (what lifting models train on).

Thirteen joints are COCO joints; pelvis, spine, thorax and head are synthesised as midpoints, exactly as MMPose's
`apis/inference_3d.py` and AugLift do, with each synthesised confidence the mean of its sources' confidences.
"""

from __future__ import annotations

import numpy as np

JOINTS = 17
# H36M index -> COCO index for the joints that exist in both.
COPIED_H36M = np.array([1, 2, 3, 4, 5, 6, 9, 11, 12, 13, 14, 15, 16])
COPIED_COCO = np.array([12, 14, 16, 11, 13, 15, 0, 5, 7, 9, 6, 8, 10])
PELVIS, SPINE, THORAX, HEAD = 0, 7, 8, 10


def coco_to_h36m(values: np.ndarray) -> np.ndarray:
    """Map (..., 17, C) COCO-ordered values (coordinates, scores) to H36M order; midpoints for the 4 made-up joints.

    Works for keypoints (C = 2) and for scores given as (..., 17, 1) alike, so both get the same averaging.
    """
    coco = np.asarray(values, dtype=np.float64)
    h36m = np.zeros_like(coco)
    h36m[..., COPIED_H36M, :] = coco[..., COPIED_COCO, :]
    h36m[..., PELVIS, :] = (coco[..., 11, :] + coco[..., 12, :]) / 2
    h36m[..., THORAX, :] = (coco[..., 5, :] + coco[..., 6, :]) / 2
    h36m[..., SPINE, :] = (h36m[..., PELVIS, :] + h36m[..., THORAX, :]) / 2
    h36m[..., HEAD, :] = (coco[..., 1, :] + coco[..., 2, :]) / 2
    return h36m
