"""Joint names of the 17-joint skeletons the pose datasets store, in the order their files hold them.

Merged files carry these names (docs/merge.md), so a file says its joint order instead of leaving it to be guessed;
the merge reorders predictions (made in H36M order) by name when a dataset keeps another order.
"""

from __future__ import annotations

# MMPose's Human3.6M order (configs/_base_/datasets/h36m.py); also the predictions' order (COCO -> H36M).
H36M = (
    "root", "right_hip", "right_knee", "right_foot", "left_hip", "left_knee", "left_foot", "spine", "thorax",
    "neck_base", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
)

# MMPose's MPI-INF-3DHP converter order (the 17 of 28 raw joints it keeps), written with the H36M names of the same
# body points: its pelvis is H36M's root (MPI index 14, MMPose's 3DHP root_index), its neck the thorax, its head the
# neck_base and its head top the head.
MPI_INF_3DHP = (
    "head", "thorax", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_foot", "left_hip", "left_knee", "left_foot", "root", "spine", "neck_base",
)

ORDERS = {"h36m": H36M, "mpi": MPI_INF_3DHP}


def reorder(source: tuple[str, ...], target: tuple[str, ...]) -> list[int]:
    """Indices that turn an array in `source` order into `target` order (`array[..., reorder(...), :]`)."""
    return [source.index(name) for name in target]
