"""H.264 (yuv420p) MP4 encoding through the ffmpeg binary that the imageio-ffmpeg package ships, and a cheap check
that an MP4 file is whole.

The frame files are piped to ffmpeg as they are (it decodes the PNGs itself: decoding a 1440x1080 frame in Python
costs ~90 ms, as long as encoding it). Each frame is first checked with Pillow (`verify`, ~2 ms, no decode) so that a
missing, truncated or odd-sized frame fails with its own path in the message. Nothing is downloaded at run time: the
encoder is the package's bundled ffmpeg with libx264.
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import imageio_ffmpeg
from PIL import Image


def check_frame(path: Path) -> tuple[int, int]:
    """The frame's (width, height); raises naming the file when it is missing or damaged."""
    try:
        with Image.open(path) as image:
            image.verify()
            return image.size
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot read frame ({error}): re-extract the sequence's images") from None


def encode_mp4(path: Path, frames: Sequence[Path], fps: float, crf: int, preset: str) -> None:
    """Encode the PNG frame files, in order, as an H.264 yuv420p MP4 at `fps`. All frames share one even size."""
    if not frames:
        raise ValueError("the clip has no frames to encode")
    size = check_frame(frames[0])
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"{frames[0]}: size {size[0]}x{size[1]} is odd; yuv420p needs even sizes")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-f", "image2pipe",
               "-c:v", "png", "-framerate", str(fps), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p",
               "-crf", str(crf), "-preset", preset, "-f", "mp4", str(path)]
    with tempfile.TemporaryFile() as log:
        encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            for frame in frames:
                if check_frame(frame) != size:
                    raise ValueError(f"{frame}: size {check_frame(frame)} differs from the clip's first frame {size}")
                encoder.stdin.write(frame.read_bytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped early; its log below says why
        except BaseException:
            encoder.kill()
            raise
        finally:
            try:
                encoder.stdin.close()
            except BrokenPipeError:
                pass
            code = encoder.wait()
        if code != 0:
            log.seek(0)
            message = log.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"ffmpeg failed ({code}) encoding {len(frames)} frames from {frames[0].parent}: "
                               f"{message[-1] if message else 'no message'}")


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
