"""Members of a gzip-compressed tar archive read in place, for raw datasets released as `.tgz` files.

A gzip stream cannot be seeked, so every read is one forward pass over the archive that stops at the last member
asked for; nothing is extracted besides the members asked for, and those only to where the caller says (a
temporary file on the task's local disk). A truncated or corrupt archive fails the reads of the members at or
after the damage, each as a `ValueError` naming the archive and the member: the caller records it per item.
"""

from __future__ import annotations

import shutil
import tarfile
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# What tarfile, gzip and zlib raise for a damaged archive: a bad header, a cut stream, a bad CRC or deflate block.
DAMAGED = (tarfile.TarError, EOFError, zlib.error, OSError)


@dataclass(frozen=True)
class ArchiveMember:
    """One file inside a `.tgz`: `member` is its path in the archive."""

    archive: Path
    member: str

    def __str__(self) -> str:
        return f"{self.archive} (member {self.member})"

    def extract_to(self, target: Path) -> None:
        """Copy the member's bytes to `target` (streamed, never whole in memory)."""
        def copy(handle: IO[bytes]) -> None:
            with open(target, "wb") as out:
                shutil.copyfileobj(handle, out, 1 << 20)

        for_each_member(self.archive, {self.member}, lambda _name, handle: copy(handle))


def for_each_member(archive: Path, members: Collection[str], use: Callable[[str, IO[bytes]], None]) -> None:
    """Call `use(name, handle)` for each of `members` in archive order, in one pass; stops after the last one.

    Raises `ValueError` naming the archive and the member for a damaged archive or a member it does not hold;
    `use`'s own exceptions pass through."""
    wanted = set(members)
    current = "its first member"
    try:
        for name, handle in _regular_files(archive):
            if name not in wanted:
                continue
            current = name
            use(name, handle)
            wanted.discard(name)
            if not wanted:
                return
    except DAMAGED as error:
        missing = current if current in wanted else ", ".join(sorted(wanted))
        raise ValueError(f"{archive}: cannot read member {missing}, the archive is damaged or cut short "
                         f"({type(error).__name__}: {error}); download it again") from None
    if wanted:
        raise ValueError(f"{archive}: holds no member {min(wanted)} (an archive of another subject or release?)")


def _regular_files(archive: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(path in the archive without a leading `./`, its bytes) per regular file, in archive order."""
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar:
            if info.isreg():
                handle = tar.extractfile(info)
                if handle is not None:
                    yield info.name.removeprefix("./"), handle
