"""Write-then-rename, so that a reader never sees a half-written file.

Temporary names start with `.tmp-` in the destination folder (same file system, so the rename is atomic). A task
killed mid-write leaves such a file behind; `is_temporary` lets the next scan of that folder recognise and remove it.
`durable=True` also fsyncs the file before the rename and its folder after: for the run's metadata (a few small files
that every reader needs), so that a node crash leaves the old version or the new one, never an empty file. Per-item
checkpoints skip it: they are validated on resume, and a lost one is only redone.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def is_temporary(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


@contextmanager
def atomic_path(path: Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on error remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        yield tmp
        if durable and tmp.is_file():
            _fsync(tmp)
        if tmp.is_dir() and path.is_dir() and not path.is_symlink():
            remove(path)  # os.replace cannot replace a non-empty folder; the old one is being redone anyway
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    except BaseException:
        remove(tmp)
        raise


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def append_line(path: Path, line: str) -> None:
    """Append one line durably. A crash mid-append can leave a torn last line, which readers skip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:
        log.write(line.rstrip("\n") + "\n")
        log.flush()
        os.fsync(log.fileno())


def create_folder_once(folder: Path, build: Callable[[Path], None]) -> None:
    """Build a folder under a temporary name and rename it into place, unless another process got there first.

    For folders whose content depends only on their name (generated demo data, random-weight models): the first
    complete one wins and a concurrent duplicate is dropped, so no reader ever sees a half-built folder.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{TEMP_PREFIX}{os.getpid()}-{folder.name}")
    remove(tmp)
    try:
        build(tmp)
        os.rename(tmp, folder)
    except OSError:
        if not folder.exists():
            raise
    finally:
        remove(tmp)


def remove(path: Path) -> None:
    """Remove a file or a folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_with(path: Path, write: Callable[[Path], None], durable: bool = False) -> None:
    with atomic_path(path, durable) as tmp:
        write(tmp)


def write_json(path: Path, data: Any, durable: bool = True) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
