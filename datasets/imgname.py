"""Annotation files whose `imgname` follows a dataset's naming scheme: parse it once, use it for sequences and paths.

Each adapter gives a regular expression for the image's file name with named groups, at least `sequence` (the video
or camera view whose frames a shard should keep together) and usually `subject` and `frame`. Names that do not match
are refused at launch, naming the row, so a wrong file never reaches the cluster. The groups are what the adapter's
layouts (datasets/layouts.py) build image file names from.
"""

from __future__ import annotations

import posixpath
import re
from typing import ClassVar

from shardprep.datasets.mmpose_npz import MMPoseDataset
from shardprep.runtime.errors import ConfigError


class ImgnameDataset(MMPoseDataset):
    pattern: ClassVar[re.Pattern[str]]
    example: ClassVar[str]

    def fields(self, imgname: str) -> dict[str, str | int]:
        """The named groups of the image's file name; all-digit values as int (`frame`)."""
        match = self.pattern.fullmatch(posixpath.basename(imgname))  # not Path: this runs once per row
        if match is None:
            raise ValueError(f"imgname {imgname!r} does not follow the {self.name} naming, e.g. {self.example!r}")
        return {
            key: int(value) if value.isdigit() else value
            for key, value in match.groupdict().items()
            if value is not None
        }

    def check_names(self) -> None:
        for row, imgname in enumerate(self.arrays["imgname"].tolist()):
            try:
                self.fields(imgname)
            except ValueError as error:
                raise ConfigError(f"{self.annotation} row {row}: {error}; is this the right annotation file?") from None

    def sequence_of(self, imgname: str) -> str:
        return str(self.fields(imgname)["sequence"])

    def subject_of(self, imgname: str) -> str:
        """The subject a row shows, from the adapter's own parse (what `launch/split.py` cuts by)."""
        return str(self.fields(imgname)["subject"])
