"""MPI-INF-3DHP as converted by MMPose: `mpi_inf_3dhp_{train,test_valid}.npz` and the extracted frames.

`imgname` is `S1_Seq1_Cam0_000001.jpg` (train) or `TS1_000001.jpg` (test). The file's 17 joints are in MPI order;
this adapter reorders `part` and `S` to H36M order on load, so the merged ground truth and the predictions (H36M
order) line up. The mapping `h36m = mpi[[14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4]]` is inferred
from MMPose's joint list (shared/notes/formats.md, marked [I]); `joint_order: null` keeps the file's order.
"""

from __future__ import annotations

import re

import numpy as np

from shardprep.datasets.imgname import ImgnameDataset
from shardprep.datasets.mmpose_npz import load_annotations
from shardprep.datasets.splits import SplitDataset

MPI_TO_H36M = (14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4)
JOINT_KEYS = ("part", "S")


class MPIINF3DHPAnnotation(ImgnameDataset):
    pattern = re.compile(
        r"(?P<sequence>(?P<subject>T?S\d+)(?:_Seq(?P<take>\d+)_Cam(?P<camera>\d+))?)_(?P<frame>\d+)\.\w+"
    )
    example = "S1_Seq1_Cam0_000001.jpg"

    def __init__(self, name: str, annotation: str, image_root: str,
                 joint_order: list[int] | None = MPI_TO_H36M) -> None:
        super().__init__(name, annotation, image_root)
        self.joint_order = None if joint_order is None else np.asarray(joint_order, dtype=np.intp)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = load_annotations(self.annotation)
            if self.joint_order is not None:
                for key in JOINT_KEYS:
                    if key in arrays and arrays[key].ndim == 3:
                        arrays[key] = arrays[key][:, self.joint_order]
            self._arrays = arrays
        return self._arrays


class MPIINF3DHPDataset(SplitDataset):
    part = MPIINF3DHPAnnotation
