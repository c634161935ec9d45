"""Raw datasets as released (videos + pose files), one item per video, for the convert stage (stages/convert.py).

A raw dataset enumerates its videos and, per video, reads the raw pose files and computes the annotation rows the
way the dataset's MMPose converter does (`read` returns a `VideoConversion`). It also says where the converted
files go, so the convert merge (merge/converted.py) writes the converter's layout, the one the MMPose-format
adapters (datasets/h36m.py, datasets/mpi_inf_3dhp.py, ...) read by default.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardprep.datasets.base import Dataset, Item
from shardprep.datasets.tgz_members import ArchiveMember
from shardprep.runtime.errors import ConfigError

# The converters' annotation keys and per-row shapes (MMPose body-3D, 17 joints).
ANNOTATION_ROWS = {"imgname": (), "center": (2,), "scale": (), "part": (17, 3), "S": (17, 4)}
BOX_SCALE_FACTOR = 1.2  # both converters: scale = 1.2 * the 2D box's longer side / 200


@dataclass(frozen=True)
class VideoConversion:
    """What converting one video means: take every `step`-th frame of `video` from frame 0, `len(names)` of them,
    as JPEGs named `names` (`video` a file, or an archive's member extracted only while converting it); or copy the
    JPEGs `images` under `names` (datasets released as frames). `annotation` holds one row per name, in the same
    order, unless `shared_frames`: then people of one frame share its image (3DPW's two actors), so rows and frames
    differ in number (every row's imgname still names one of the frames)."""

    names: list[str]
    annotation: Mapping[str, np.ndarray]
    video: Path | ArchiveMember | None = None
    step: int = 1
    images: list[Path] | None = None
    shared_frames: bool = False

    def __post_init__(self) -> None:
        rows = {key: len(value) for key, value in self.annotation.items()}
        expected = set(rows.values()) if self.shared_frames else {len(self.names)}
        if set(rows) != set(ANNOTATION_ROWS) or len(set(rows.values())) != 1 or set(rows.values()) != expected:
            raise ValueError(f"annotation rows {rows} do not match the {len(self.names)} frames")
        if (self.video is None) == (self.images is None):
            raise ValueError("a conversion takes its frames from a video or from images, one of the two")


def annotation_rows(imgnames: list[str], part_xy: np.ndarray, world: np.ndarray,
                    visible: np.ndarray) -> dict[str, np.ndarray]:
    """The converters' five keys from (frames, 17, 2) px, (frames, 17, 3) m and (frames, 17, 1) visibility:
    `part` = [x, y, v], `S` = [X, Y, Z, v], `center` = the middle of the 2D box, `scale` from its longer side. The
    same numpy operations as the converters, so the float64 results are theirs bit for bit."""
    part = np.concatenate([part_xy, visible], axis=-1)
    points = np.concatenate([world, visible], axis=-1)
    low, high = part[:, :, :2].min(axis=1), part[:, :, :2].max(axis=1)
    return {"imgname": np.array(imgnames), "center": (low + high) / 2,
            "scale": BOX_SCALE_FACTOR * np.max(high - low, axis=1) / 200, "part": part, "S": points}


class RawVideoDataset(Dataset):
    """One item per raw video: `group` is its split; `weight` its frames to extract."""

    gives = frozenset({"video_conversion"})

    def __init__(self, name: str, root: str) -> None:
        super().__init__(name)
        self.root = Path(root).expanduser()

    def validate(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(f"dataset {self.name}: raw data folder {self.root} does not exist (set raw_root=...)")

    @abstractmethod
    def read(self, item: Item) -> VideoConversion:
        """Read the raw pose files of one video; raise naming the file on bad input (a recorded item error)."""

    @abstractmethod
    def annotation_file(self, split: str) -> str:
        """Where the merged annotation file of `split` goes, relative to the converted root."""

    @abstractmethod
    def frame_folder(self, item: Item) -> str:
        """The folder of the item's frames, relative to the converted root."""

    def extra_files(self) -> Mapping[str, Callable[[Path], None]]:
        """Files besides annotations and frames (camera files), by path relative to the converted root: each
        writes its file to the path it is given."""
        return {}
