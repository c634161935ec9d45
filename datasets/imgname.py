"""Annotation files whose `imgname` follows a dataset's naming scheme: parse it once, use it for sequences and paths.

Each adapter gives a regular expression for the image's file name with named groups, at least `sequence` (the video
or camera view whose frames a shard should keep together) and usually `subject` and `frame`. Names that do not match
are refused at launch, naming the row, so a wrong file never reaches the cluster. Where the image file is not
`image_root/imgname` (3DPW, Fit3D), `image_pattern` builds its path from the groups.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import ClassVar

from shardprep.datasets.mmpose_npz import MMPoseDataset
from shardprep.runtime.errors import ConfigError


class ImgnameDataset(MMPoseDataset):
    pattern: ClassVar[re.Pattern[str]]
    example: ClassVar[str]

    def __init__(self, name: str, annotation: str, image_root: str, image_pattern: str | None = None,
                 frame_offset: int = 0) -> None:
        super().__init__(name, annotation, image_root)
        self.image_pattern = image_pattern
        self.frame_offset = frame_offset

    def fields(self, imgname: str) -> dict[str, str | int]:
        """The named groups of the image's file name; all-digit values as int (`frame`), plus `file_frame`."""
        match = self.pattern.fullmatch(posixpath.basename(imgname))  # not Path: this runs once per row
        if match is None:
            raise ValueError(f"imgname {imgname!r} does not follow the {self.name} naming, e.g. {self.example!r}")
        fields: dict[str, str | int] = {
            key: int(value) if value.isdigit() else value
            for key, value in match.groupdict().items()
            if value is not None
        }
        if "frame" in fields:
            fields["file_frame"] = int(fields["frame"]) + self.frame_offset
        return fields

    def validate(self) -> None:
        super().validate()
        for row, imgname in enumerate(self.arrays["imgname"].tolist()):
            try:
                self.fields(imgname)
            except ValueError as error:
                raise ConfigError(f"{self.annotation} row {row}: {error}; is this the right annotation file?") from None

    def sequence_of(self, imgname: str) -> str:
        return str(self.fields(imgname)["sequence"])

    def image_path(self, imgname: str) -> Path:
        if self.image_pattern is None:
            return super().image_path(imgname)
        return self.image_root / self.image_pattern.format(**self.fields(imgname))
