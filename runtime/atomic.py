"""Write-then-rename, so that a reader never sees a half-written file.

Temporary names start with `.tmp-` in the destination folder (same file system, so the rename is atomic). A task
killed mid-write leaves such a file behind; `is_temporary` lets the next scan of that folder recognise and remove it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def is_temporary(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on error remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir() and not path.is_symlink():
            remove(path)  # os.replace cannot replace a non-empty folder; the old one is being redone anyway
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


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


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
