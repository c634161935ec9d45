"""H.264 (yuv420p) MP4 encoding through the ffmpeg binary that the imageio-ffmpeg package ships, and a cheap check
that an MP4 file is whole.

Frames are decoded here (Pillow) rather than by ffmpeg so that an unreadable frame fails with its own path in the
message. Nothing is downloaded at run time: the encoder is the package's bundled ffmpeg with libx264.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image


def read_frame(path: Path) -> np.ndarray:
    """An RGB frame; raises naming the file when it is missing or cannot be decoded."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read frame ({error}): re-extract the sequence's images") from None


def encode_mp4(path: Path, frames: Iterable[Path], fps: float, crf: int, preset: str) -> None:
    """Encode the frame files, in order, as an H.264 yuv420p MP4 at `fps`. All frames must share one even size."""
    writer = None
    size = None
    try:
        for frame_path in frames:
            frame = read_frame(frame_path)
            if size is None:
                size = (frame.shape[1], frame.shape[0])
                if size[0] % 2 or size[1] % 2:
                    raise ValueError(f"{frame_path}: size {size[0]}x{size[1]} is odd; yuv420p needs even sizes")
                writer = imageio_ffmpeg.write_frames(
                    str(path), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
                    macro_block_size=2, ffmpeg_log_level="error",
                    output_params=["-crf", str(crf), "-preset", preset, "-f", "mp4"],
                )
                writer.send(None)
            elif (frame.shape[1], frame.shape[0]) != size:
                raise ValueError(f"{frame_path}: size {frame.shape[1]}x{frame.shape[0]} differs from the clip's "
                                 f"first frame ({size[0]}x{size[1]})")
            writer.send(np.ascontiguousarray(frame))
        if writer is None:
            raise ValueError("the clip has no frames to encode")
    finally:
        if writer is not None:
            writer.close()


def validate_mp4(path: Path) -> None:
    """Walk the top-level MP4 boxes: a whole file has `ftyp`, `moov` and `mdat` and ends exactly at the last box."""
    size = path.stat().st_size
    seen = set()
    with open(path, "rb") as handle:
        offset = 0
        while offset < size:
            handle.seek(offset)
            header = handle.read(16)
            if len(header) < 8:
                raise ValueError(f"{path}: truncated MP4 box header at byte {offset}")
            length, kind = struct.unpack(">I4s", header[:8])
            if length == 1:
                if len(header) < 16:
                    raise ValueError(f"{path}: truncated MP4 box header at byte {offset}")
                length = struct.unpack(">Q", header[8:16])[0]
            elif length == 0:
                length = size - offset
            if length < 8 or offset + length > size:
                raise ValueError(f"{path}: MP4 box {kind!r} at byte {offset} runs past the end of the file")
            seen.add(kind)
            offset += length
    missing = {b"ftyp", b"moov", b"mdat"} - seen
    if missing:
        raise ValueError(f"{path}: not a whole MP4 (no {', '.join(sorted(m.decode() for m in missing))} box)")
