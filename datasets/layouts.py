"""Where a row's image file is, and which of a dataset's known layouts the files on disk follow.

Converters and scripts name the same frames differently (3DPW: the official `image_00000.jpg` or AugLift's
`<scene>_image_00000.jpg`; Fit3D: with or without the camera's `-0`, with or without `.mp4`, file number = frame or
frame + 1). At launch every row's file is looked up under each candidate layout, with one directory listing per
folder (never a stat per row: a million rows stay a few listings). The layout under which every file exists is the
run's; none or several is refused with the counts, the first missing path and a name the folder does hold.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shardprep.runtime.errors import ConfigError

SHOWN_NAMES = 3


@dataclass(frozen=True)
class Layout:
    """`pattern` formats a row's file name under the image root from its imgname's fields (None: the imgname is that
    path); `frame_offset` is added to the imgname's frame number to give `file_frame`."""

    name: str
    pattern: str | None = None
    frame_offset: int = 0

    def relative(self, imgname: str, fields: Mapping[str, str | int]) -> str:
        if self.pattern is None:
            return imgname
        values = dict(fields)
        if "frame" in values:
            values["file_frame"] = int(values["frame"]) + self.frame_offset
        return self.pattern.format(**values)

    def describe(self) -> str:
        where = "<image_root>/<imgname>" if self.pattern is None else f"<image_root>/{self.pattern}"
        return f"{self.name!r} ({where}{f', frame {self.frame_offset:+d}' if self.frame_offset else ''})"


class Listing:
    """The names in each folder, listed once: membership tests for many files without a stat each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._names: dict[str, frozenset[str] | None] = {}

    def names(self, folder: str) -> frozenset[str] | None:
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(self.root / folder))
            except (FileNotFoundError, NotADirectoryError):
                self._names[folder] = None
        return self._names[folder]

    def exists(self, relative: str) -> bool:
        folder, name = posixpath.split(relative)
        names = self.names(folder)
        return names is not None and name in names

    def example(self, relative: str) -> str:
        """What the folder of `relative` holds, for an error message."""
        folder = posixpath.dirname(relative)
        names = self.names(folder)
        shown = self.root / folder
        if names is None:
            return f"folder {shown} does not exist"
        if not names:
            return f"folder {shown} is empty"
        return f"{shown} holds e.g. {', '.join(repr(n) for n in sorted(names)[:SHOWN_NAMES])}"


@dataclass
class Fit:
    """How one layout fares over the rows: how many files are missing, and the first one."""

    layout: Layout
    rows: int = 0
    missing: int = 0
    first: tuple[str, int, str] | None = field(default=None)  # (split, row, relative path)


def check_layouts(rows: Iterable[tuple[str, int, str, Mapping[str, str | int]]], candidates: Sequence[Layout],
                  listing: Listing) -> list[Fit]:
    """Look every row (split, row, imgname, fields) up under every candidate; the fit of each."""
    fits = [Fit(layout) for layout in candidates]
    for split, row, imgname, fields in rows:
        for fit in fits:
            fit.rows += 1
            relative = fit.layout.relative(imgname, fields)
            if not listing.exists(relative):
                fit.missing += 1
                if fit.first is None:
                    fit.first = (split, row, relative)
    return fits


def choose(dataset: str, fits: Sequence[Fit], listing: Listing, setting: str) -> Layout:
    """The one layout under which every file exists; otherwise a `ConfigError` that says what to change."""
    complete = [fit.layout for fit in fits if fit.missing == 0]
    if len(complete) == 1:
        return complete[0]
    if len(complete) > 1:
        names = " and ".join(layout.describe() for layout in complete)
        raise ConfigError(f"dataset {dataset}: every image exists under more than one layout, {names} (frames "
                          f"subsampled?): choose one with {setting}")
    details = []
    for fit in fits:
        split, row, relative = fit.first  # type: ignore[misc]
        details.append(f"under layout {fit.layout.describe()} {fit.missing} of {fit.rows} images are missing, first "
                       f"{listing.root / relative} ({f'{split} row' if split else 'row'} {row})")
    hint = listing.example(fits[0].first[2])  # type: ignore[index]
    raise ConfigError(f"dataset {dataset}: {'; '.join(details)}; {hint}: fix dataset.image_root, or set {setting}")
