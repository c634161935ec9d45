"""Human3.6M as released: `metadata.xml`, `S*/Videos/<prefix>.<camera>.mp4` ("Directions 1.54138969.mp4") and
`S*/MyPoseFeatures/{D2_Positions,D3_Positions_mono}/<prefix>.<camera>.cdf`, converted to what MMPose's
`tools/dataset_converters/preprocess_h36m.py` writes.

Items are the videos of the configured subjects, per split in list order, per subject in `metadata.xml`'s mapping
order (action 1, "_ALL", left out), per sequence in camera-index order: the converter's row order. Per video:
- every `sample_rate`-th frame from frame 0 of the CDFs' `Pose` (32 joints, 2D px / 3D mm) and of the video;
- the 17 joints `JOINTS`; `part` = [x, y, 1], `S` = [X, Y, Z in m, 1] (float64);
- `center` = middle of the 2D keypoints' box, `scale` = 1.2 * its longer side / 200;
- `imgname` `S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg` (1-based 50 Hz frame number).
CDFs are read with cdflib (pure Python; the converter uses spacepy, which needs NASA's CDF C library).

`raw_root` may hold the release's per-subject archives instead (`Videos_S1.tgz`, `Poses_D2_Positions_S1.tgz`,
`Poses_D3_Positions_mono_S1.tgz`, members `S1/Videos/...`, `S1/MyPoseFeatures/<feature>/...`), read in place
(datasets/tgz_members.py): per subject and part, an extracted folder wins over the archive.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO

import cdflib
import numpy as np

from shardprep.datasets.base import Item
from shardprep.datasets.h36m_metadata import H36MMetadata, Sequence
from shardprep.datasets.raw_video import RawVideoDataset, VideoConversion, annotation_rows
from shardprep.datasets.tgz_members import ArchiveMember, for_each_member
from shardprep.runtime.errors import ConfigError

log = logging.getLogger(__name__)

JOINTS = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]
RAW_JOINTS = 32
FRAME_RATE = 50
SKIPPED_ACTION = "1"  # "_ALL": every action of the subject in one sequence
# Per part of a subject: its folder in the extracted tree (also its members' folder in the archive), its archive.
PARTS = {"Videos": ("Videos", "Videos_{subject}.tgz"),
         "D2_Positions": ("MyPoseFeatures/D2_Positions", "Poses_D2_Positions_{subject}.tgz"),
         "D3_Positions_mono": ("MyPoseFeatures/D3_Positions_mono", "Poses_D3_Positions_mono_{subject}.tgz")}
Source = Path | ArchiveMember


@dataclass(frozen=True)
class Video:
    split: str
    sequence: Sequence
    camera: str

    @property
    def basename(self) -> str:
        return f"{self.sequence.prefix}.{self.camera}"

    @property
    def folder_name(self) -> str:
        return f"{self.sequence.subject}_{self.basename.replace(' ', '_')}"


class H36MRawDataset(RawVideoDataset):
    def __init__(self, name: str, root: str, subjects: dict[str, list[str]], metadata: str = "metadata.xml",
                 sample_rate: int = 5) -> None:
        super().__init__(name, root)
        self.subjects = subjects
        self.metadata_path = self.root / metadata
        self.sample_rate = sample_rate
        self._frame_counts: dict[Path, dict[str, int]] = {}  # per archive read, frames per D2 member

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.sample_rate, int) or isinstance(self.sample_rate, bool) or self.sample_rate < 1:
            raise ConfigError(f"dataset.sample_rate={self.sample_rate!r}: a whole number >= 1 (5 gives fps10)")
        if not self.metadata_path.is_file():
            raise ConfigError(f"dataset {self.name}: {self.metadata_path} not found: it comes with the release's "
                              "code package (set dataset.metadata=<path under raw_root>)")
        try:
            metadata = self.metadata
        except ValueError as error:
            raise ConfigError(str(error)) from None
        unknown = sorted({s for names in self.subjects.values() for s in names} - set(metadata.subjects))
        if unknown:
            raise ConfigError(f"dataset.subjects names {', '.join(unknown)}, which {self.metadata_path} does not map "
                              f"(it has {', '.join(metadata.subjects)})")
        self._check_parts()

    def _check_parts(self) -> None:
        """Every part of every named subject extracted or archived; both: the extracted folder is used (said once)."""
        both = []
        for subject in (s for names in self.subjects.values() for s in names):
            for part, (folder, archive) in PARTS.items():
                extracted, archived = self.root / subject / folder, self._archive(subject, part)
                if extracted.is_dir() and archived.is_file():
                    both.append(archived.name)
                elif not extracted.is_dir() and not archived.is_file():
                    raise ConfigError(f"dataset {self.name}: subject {subject} has neither {extracted} nor the "
                                      f"release's {archived}: put the archive (or its extracted tree) under raw_root")
        if both:
            log.warning("dataset %s: %d parts are both extracted and archived under %s (%s): the extracted files are "
                        "used, the archives ignored", self.name, len(both), self.root,
                        ", ".join(both[:3]) + (", ..." if len(both) > 3 else ""))

    @cached_property
    def metadata(self) -> H36MMetadata:
        return H36MMetadata(self.metadata_path)

    @cached_property
    def videos(self) -> dict[str, Video]:
        videos = {}
        for split in sorted(self.subjects):
            for subject in self.subjects[split]:
                for sequence in self.metadata.sequences[subject]:
                    if sequence.action == SKIPPED_ACTION:
                        continue
                    for camera in self.metadata.camera_ids:
                        video = Video(split, sequence, camera)
                        videos[video.folder_name] = video
        return videos

    def items(self) -> list[Item]:
        return [Item(id=item_id, sequence=item_id, weight=self._frames_to_extract(video), group=video.split, index=i)
                for i, (item_id, video) in enumerate(self.videos.items())]

    def _archive(self, subject: str, part: str) -> Path:
        return self.root / PARTS[part][1].format(subject=subject)

    def _source(self, video: Video, part: str, suffix: str) -> Source:
        """The extracted file where the part's folder exists, else the archive's member of the same path."""
        subject = video.sequence.subject
        relative = f"{subject}/{PARTS[part][0]}/{video.basename}{suffix}"
        if (self.root / subject / PARTS[part][0]).is_dir():
            return self.root / relative
        return ArchiveMember(self._archive(subject, part), relative)

    def _pose_file(self, video: Video, feature: str) -> Source:
        return self._source(video, feature, ".cdf")

    def _video_file(self, video: Video) -> Source:
        return self._source(video, "Videos", ".mp4")

    def _frames_to_extract(self, video: Video) -> int:
        """From the 2D CDF's header (no data read); 1 where it cannot be read (the item then fails when read)."""
        source = self._pose_file(video, "D2_Positions")
        if isinstance(source, ArchiveMember):
            frames = self._archived_frame_counts(source.archive).get(source.member, 0)
        else:
            frames = cdf_frames(source)
        return max(1, -(-frames // self.sample_rate))

    def _archived_frame_counts(self, archive: Path) -> dict[str, int]:
        """Frames per CDF member of an archive, in one pass over it (one pass per item would be quadratic)."""
        if archive not in self._frame_counts:
            counts: dict[str, int] = {}
            sources = [self._pose_file(video, "D2_Positions") for video in self.videos.values()]
            members = [s.member for s in sources if isinstance(s, ArchiveMember) and s.archive == archive]

            def count(name: str, handle: IO[bytes]) -> None:
                with tempfile.TemporaryDirectory(prefix="shardprep-cdf-") as folder:
                    path = Path(folder) / "pose.cdf"
                    path.write_bytes(handle.read())
                    counts[name] = cdf_frames(path)

            try:
                for_each_member(archive, members, count)
            except ValueError:  # damaged or incomplete: those items weigh 1 and fail, naming the member, when read
                pass
            self._frame_counts[archive] = counts
        return self._frame_counts[archive]

    def read(self, item: Item) -> VideoConversion:
        video = self.videos[item.id]
        self.metadata.camera(video.sequence.subject, video.camera)  # a camera metadata.xml lacks fails this item
        points_2d = read_pose(self._pose_file(video, "D2_Positions"), 2)
        points_3d = read_pose(self._pose_file(video, "D3_Positions_mono"), 3)
        if len(points_2d) != len(points_3d):
            raise ValueError(f"{self._pose_file(video, 'D2_Positions')} has {len(points_2d)} frames, "
                             f"{self._pose_file(video, 'D3_Positions_mono')} {len(points_3d)}: re-extract them")
        source = self._video_file(video)
        if isinstance(source, Path) and not source.is_file():
            raise ValueError(f"{source}: video not found (its CDFs exist)")
        part_xy = points_2d[::self.sample_rate, JOINTS]
        world = points_3d[::self.sample_rate, JOINTS] / 1000.0
        numbers = range(0, len(points_2d), self.sample_rate)
        names = [f"{video.folder_name}_{number + 1:06d}.jpg" for number in numbers]
        imgnames = [f"{video.sequence.subject}/{video.folder_name}/{name}" for name in names]
        visible = np.ones((len(part_xy), len(JOINTS), 1))
        return VideoConversion(names=names, video=source, step=self.sample_rate,
                               annotation=annotation_rows(imgnames, part_xy, world, visible))

    def annotation_file(self, split: str) -> str:
        return f"annotation_body3d/fps{FRAME_RATE // self.sample_rate}/h36m_{split}.npz"

    def frame_folder(self, item: Item) -> str:
        video = self.videos[item.id]
        return f"images/{video.sequence.subject}/{video.folder_name}"

    def extra_files(self) -> Mapping[str, Callable[[Path], None]]:
        def write_cameras(path: Path) -> None:
            with open(path, "wb") as handle:
                pickle.dump(self.metadata.cameras(), handle)

        return {"annotation_body3d/cameras.pkl": write_cameras}

    def fingerprint_files(self) -> list[Path]:
        return [self.metadata_path]


def cdf_frames(path: Path) -> int:
    """The frames of a CDF's `Pose` from its header; 0 where it cannot be read (the item fails when read)."""
    try:
        return int(cdflib.CDF(path).varinq("Pose").Dim_Sizes[0])
    except Exception:  # missing or corrupt: reported with its file when the item is read
        return 0


def read_pose(source: Source, dims: int) -> np.ndarray:
    """A CDF's `Pose` variable as (frames, 32, dims): the release stores one record of (frames, 32 * dims). An
    archive's member is copied to a temporary file first (cdflib reads paths)."""
    if isinstance(source, ArchiveMember):
        with tempfile.TemporaryDirectory(prefix="shardprep-cdf-") as folder:
            path = Path(folder) / "pose.cdf"
            source.extract_to(path)
            return _read_pose_file(path, dims, str(source))
    return _read_pose_file(source, dims, str(source))


def _read_pose_file(path: Path, dims: int, name: str) -> np.ndarray:
    try:
        values = np.asarray(cdflib.CDF(path).varget("Pose"))
    except Exception as error:  # cdflib raises OSError, ValueError, KeyError... for a missing or corrupt file
        raise ValueError(f"{name}: cannot read its Pose variable ({type(error).__name__}: {error})") from None
    if values.size % (RAW_JOINTS * dims):
        raise ValueError(f"{name}: Pose holds {values.size} values, not frames of {RAW_JOINTS} x {dims}")
    return values.reshape(-1, RAW_JOINTS, dims)
