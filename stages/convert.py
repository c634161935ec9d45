"""Stage 1: raw videos to MMPose-format annotation rows and extracted frames, one item per video.

Per video two checkpoints: `annotation` (`<id>.npz`: the converter's keys for the video's rows) and `frames`
(`<id>.frames/`, stages/frames.py). The raw dataset (datasets/raw_video.py) computes the rows; this stage extracts
the frames the rows name and checks the two agree. The convert merge (merge/converted.py) joins them into the
converter's layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from shardprep.datasets.raw_video import ANNOTATION_ROWS, VideoConversion
from shardprep.datasets.tgz_members import ArchiveMember
from shardprep.runtime.errors import ConfigError
from shardprep.stages.base import ArrayOutput, FileOutput, ItemResult, Stage, Work
from shardprep.stages.frames import copy_frames, extract_archived_frames, extract_frames, validate_frame_folder

ANNOTATION_ARRAYS = {key: (None, *shape) for key, shape in ANNOTATION_ROWS.items()}


class ConvertStage(Stage):
    needs = frozenset({"video_conversion"})

    def __init__(self, name: str, batch_size: int = 1, read_workers: int = 1, jpeg_quality: int = 2,
                 ffmpeg_threads: int = 0) -> None:
        super().__init__(name, batch_size, read_workers)
        self.jpeg_quality = jpeg_quality
        self.ffmpeg_threads = ffmpeg_threads
        self.outputs = (ArrayOutput("annotation", ANNOTATION_ARRAYS),
                        FileOutput("frames", "frames", validate_frame_folder))

    def validate(self) -> None:
        if not isinstance(self.jpeg_quality, int) or not 2 <= self.jpeg_quality <= 31:
            raise ConfigError(f"stage.jpeg_quality={self.jpeg_quality!r}: ffmpeg's JPEG qscale, 2 (best) .. 31")
        if not isinstance(self.ffmpeg_threads, int) or self.ffmpeg_threads < 0:
            raise ConfigError(f"stage.ffmpeg_threads={self.ffmpeg_threads!r}: a whole number >= 0 (0: ffmpeg picks)")

    def environment(self) -> dict[str, str]:
        from shardprep.stages.frames import ffmpeg_binary

        return {"ffmpeg": ffmpeg_binary().rsplit("/", 1)[-1]}

    def process(self, batch: Sequence[Work]) -> list[ItemResult | BaseException]:
        results: list[ItemResult | BaseException] = []
        for work in batch:
            conversion: VideoConversion = work.payload
            result: dict[str, object] = {}
            if "annotation" in work.todo:
                result["annotation"] = {key: np.asarray(value) for key, value in conversion.annotation.items()}
            if "frames" in work.todo:
                if isinstance(conversion.video, ArchiveMember):
                    result["frames"] = partial(extract_archived_frames, conversion.video, conversion.step,
                                               conversion.names, quality=self.jpeg_quality, threads=self.ffmpeg_threads)
                elif conversion.video is not None:
                    result["frames"] = partial(extract_frames, conversion.video, conversion.step, conversion.names,
                                               quality=self.jpeg_quality, threads=self.ffmpeg_threads)
                else:
                    result["frames"] = partial(copy_frames, conversion.images, conversion.names)
            results.append(result)
        return results
