"""The published DSEC dataset: one folder per split and duration, in the seed builder's layout, that can be moved.

    <name>_<split>_<duration>/
        event_npy/<sequence>/<clip>.npz          (and <clip>.npy, EventGPT's pickled form, when the run wrote it)
        event_image/<sequence>/<clip>_<i>.png    (i = 0 .. images_per_clip - 1)
        video/<sequence>/<clip>/000000.png ...   (the clip's frames)
        mp4/<sequence>/<clip>.mp4
        <name>_<split>_<duration>.json           (paths relative to the folder)

`<clip>` is the clip's index, six digits. Files are hard links to the checkpoints where the file system allows (no
bytes copied; a file keeps its content if the run folder is deleted later), copies otherwise or with
`files=copy`. The folder is built under a temporary name and renamed into place, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

FILE_MODES = ("hardlink", "copy")
KINDS = ("event_npy", "event_image", "video", "mp4")


@dataclass
class Completeness:
    """Per published folder, how many clips have each kind of file, and how many entries its JSON lists."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, group: str, kind: str, number: int = 1) -> None:
        row = self.counts.setdefault(group, dict.fromkeys((*KINDS, "json"), 0))
        row[kind] += number

    @classmethod
    def of_folders(cls, folders: Sequence[Path]) -> Completeness:
        """Counted in published folders as they are now (for `status by=group`)."""
        table = cls()
        for folder in folders:
            name = folder.name
            table.add(name, "event_npy", len(list(folder.glob("event_npy/*/*.npz"))))
            table.add(name, "event_image", len(list(folder.glob("event_image/*/*_0.png"))))
            table.add(name, "video", len([p for p in folder.glob("video/*/*") if p.is_dir()]))
            table.add(name, "mp4", len(list(folder.glob("mp4/*/*.mp4"))))
            try:
                table.add(name, "json", len(json.loads((folder / f"{name}.json").read_text())))
            except (OSError, ValueError):
                pass  # no JSON (yet): counted as 0
        return table

    def table(self) -> str:
        header = ("folder", *KINDS, "json")
        body = [(group, *(str(row[key]) for key in header[1:])) for group, row in self.counts.items()]
        widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                         for line in (header, *body))


def place(source: Path, target: Path, mode: str) -> None:
    """`target` as a hard link to `source` (a copy across file systems or where links are refused), or a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "hardlink":
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def place_images(source: Path, targets: Sequence[Path], mode: str) -> None:
    """The event image(s) of a clip: one PNG, or a folder 000000.png... for several."""
    sources = [source] if source.is_file() else sorted(source.glob("*.png"))
    for image, target in zip(sources, targets, strict=True):
        place(image, target, mode)


def place_frames(source: Path, target: Path, mode: str) -> None:
    """The clip's frames, without their timestamps file (consumers list the folder's images)."""
    target.mkdir(parents=True, exist_ok=True)
    for frame in sorted(source.glob("*.png")):
        place(frame.resolve() if frame.is_symlink() else frame, target / frame.name, mode)
