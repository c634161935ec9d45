"""A video's frames as one checkpointed folder of JPEGs, extracted with the ffmpeg binary imageio-ffmpeg ships.

The folder is built under the runtime's temporary name and renamed into place only once complete, and it lists its
own frames in `frames.txt`, written last: it counts as done when every listed JPEG is there, nothing else is, and
the last one decodes. A video that ends early (truncated, or shorter than its pose file) is an error naming it,
never a short folder.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from shardprep.datasets.tgz_members import ArchiveMember

LISTING = "frames.txt"
NUMBERED = "%06d.jpg"


def ffmpeg_binary() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def extract_frames(video: Path, step: int, names: Sequence[str], folder: Path, quality: int = 2, threads: int = 1,
                   ffmpeg: str | None = None, label: str | None = None) -> None:
    """Every `step`-th frame of `video` from frame 0, `len(names)` of them, as JPEGs `folder/<name>`.

    `quality` is ffmpeg's JPEG qscale (2 best, 31 worst); `label` names the video in errors (default: its path)."""
    folder.mkdir()
    selection = [] if step == 1 else ["-vf", f"select=not(mod(n\\,{step}))", "-fps_mode", "passthrough"]
    command = [ffmpeg or ffmpeg_binary(), "-nostdin", "-v", "error", "-threads", str(threads), "-i", str(video),
               *selection, "-frames:v", str(len(names)), "-q:v", str(quality), "-start_number", "0",
               str(folder / NUMBERED)]
    done = subprocess.run(command, capture_output=True, text=True)
    produced = sorted(folder.glob("*.jpg"))
    if done.returncode != 0 or len(produced) < len(names):
        said = [line for line in done.stderr.splitlines() if line.strip()]
        why = f"ffmpeg exited {done.returncode}: {said[-1]}" if done.returncode and said else "the video ends there"
        raise ValueError(f"{label or video}: decoded {len(produced)} of the {len(names)} frames its annotation needs (every "
                         f"{step}th frame from 0); {why} (truncated video, or a pose file longer than the video?)")
    for index, name in enumerate(names):
        (folder / (NUMBERED % index)).rename(folder / name)
    write_listing(folder, names)


def extract_archived_frames(member: ArchiveMember, step: int, names: Sequence[str], folder: Path, quality: int = 2,
                            threads: int = 1) -> None:
    """`extract_frames` of a video inside an archive: the member is copied to a temporary folder (TMPDIR: the
    task's local disk on a cluster) for as long as its frames are extracted (ffmpeg seeks in an mp4: a pipe would
    fail on videos whose index is at the end)."""
    with tempfile.TemporaryDirectory(prefix="shardprep-video-") as temporary:
        video = Path(temporary) / Path(member.member).name
        member.extract_to(video)
        extract_frames(video, step, names, folder, quality=quality, threads=threads, label=str(member))


def copy_frames(images: Sequence[Path], names: Sequence[str], folder: Path) -> None:
    """Frames released as JPEGs: copied under their converted names."""
    folder.mkdir()
    for image, name in zip(images, names, strict=True):
        if not image.is_file():
            raise ValueError(f"{image}: frame not found")
        shutil.copyfile(image, folder / name)
    write_listing(folder, names)


def write_listing(folder: Path, names: Sequence[str]) -> None:
    (folder / LISTING).write_text("".join(f"{name}\n" for name in names))


def listed_frames(folder: Path) -> list[str]:
    return (folder / LISTING).read_text().split("\n")[:-1]


def validate_frame_folder(folder: Path) -> None:
    """Complete: `frames.txt` is there, every frame it lists and nothing else, and the last frame decodes."""
    names = listed_frames(folder)
    present = {path.name for path in folder.iterdir()} - {LISTING}
    if present != set(names):
        raise ValueError(f"{folder}: {len(present)} frame files, {LISTING} lists {len(names)}")
    if names:
        with Image.open(folder / names[-1]) as image:
            image.load()
