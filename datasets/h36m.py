"""Human3.6M as converted by MMPose: `annotation_body3d/fps{N}/h36m_{train,test}.npz` and the extracted frames.

`imgname` is `S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg` (subject, action, camera, 1-based
50 Hz frame), a path under the image root. One sequence = one action seen by one camera.
"""

from __future__ import annotations

import re

from shardprep.datasets.imgname import ImgnameDataset
from shardprep.datasets.splits import SplitDataset
from shardprep.runtime.errors import ConfigError


class H36MAnnotation(ImgnameDataset):
    pattern = re.compile(r"(?P<sequence>(?P<subject>S\d+)_(?P<action>.+)\.(?P<camera>\d+))_(?P<frame>\d+)\.\w+")
    example = "S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg"


class H36MDataset(SplitDataset):
    part = H36MAnnotation

    def __init__(self, name: str, root: str, annotations: dict[str, str], image_root: str = "images",
                 subjects: dict[str, list[str]] | None = None, cameras: str | None = None) -> None:
        super().__init__(name, root, annotations, image_root, subjects)
        # Camera parameters (a pickle) are not needed to enumerate or read frames; only checked to exist, so a run
        # is never made from a tree that lacks them.
        self.cameras = self.root / cameras if cameras else None

    def validate(self) -> None:
        if self.cameras is not None and not self.cameras.is_file():
            raise ConfigError(f"H36M cameras file not found: {self.cameras} (set dataset.cameras, or null)")
        super().validate()
