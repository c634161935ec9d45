"""MPI-INF-3DHP as MMPose's converter (`tools/dataset_converters/preprocess_mpi_inf_3dhp.py`) writes it:
`<root>/annotations/mpi_inf_3dhp_{train,test_valid}.npz` and the frames flat in `<root>/images/`.

`imgname` is `S1_Seq1_Cam0_000001.jpg` (train) or `TS1_000001.jpg` (test; frame numbers have gaps, only valid
frames are kept). The file's 17 joints are in MPI order (datasets/joints.py). `joint_order: h36m` (default) reorders
`part` and `S` by joint name on load, so ground truth and predictions (H36M order) line up for H36M-style training;
`joint_order: mpi` keeps the file's order, which MMPose's 3DHP configs (`root_index=14`) and the converter's
`joint*_stats.pkl` assume, and the merge then reorders the predictions to MPI order too (never mixed).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from shardprep.datasets import joints
from shardprep.datasets.imgname import ImgnameDataset
from shardprep.datasets.mmpose_npz import load_annotations
from shardprep.datasets.splits import SplitDataset
from shardprep.runtime.errors import ConfigError

JOINT_KEYS = ("part", "S")


class MPIINF3DHPAnnotation(ImgnameDataset):
    pattern = re.compile(
        r"(?P<sequence>(?P<subject>T?S\d+)(?:_Seq(?P<take>\d+)_Cam(?P<camera>\d+))?)_(?P<frame>\d+)\.\w+"
    )
    example = "S1_Seq1_Cam0_000001.jpg"

    def __init__(self, name: str, annotation: str, image_root: str, joint_order: str = "h36m", **layout: Any) -> None:
        super().__init__(name, annotation, image_root, **layout)
        if joint_order not in joints.ORDERS:
            raise ConfigError(f"dataset {name!r}: joint_order={joint_order!r}: use h36m (reordered on load) or mpi "
                              "(the converter's order)")
        self.joint_names = joints.ORDERS[joint_order]

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = load_annotations(self.annotation)
            order = joints.reorder(joints.MPI_INF_3DHP, self.joint_names)
            for key in JOINT_KEYS:
                if key in arrays and arrays[key].ndim == 3:
                    arrays[key] = arrays[key][:, order]
            self._arrays = arrays
        return self._arrays


class MPIINF3DHPDataset(SplitDataset):
    part = MPIINF3DHPAnnotation
