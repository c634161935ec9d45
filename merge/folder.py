"""The merged folder (`merged_dir`): one merge at a time, no debris from a killed one, never two runs' files mixed.

`.shardprep-merge.json` in the folder records, per file that a merge wrote, the fingerprint of the run it came from,
and whether the last merge finished (`state`). A merge
- holds `.lock` (a second merge into the same folder is refused at once),
- removes `.tmp-*` files a killed merge left (they are only ever half-written outputs of a merge),
- writes its files (each temp + rename), then moves files that an earlier merge wrote from a run of another
  fingerprint, and that this one did not rewrite, into `stale/<fingerprint>/`: the top of the folder then holds the
  files of one run only, and nothing is deleted. Files that no merge wrote are left alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from shardprep.runtime.atomic import is_temporary, remove, write_json
from shardprep.runtime.errors import ConfigError

RECORD = ".shardprep-merge.json"
LOCK = ".lock"
STALE = "stale"


def _read_record(folder: Path) -> dict:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {"files": {}}
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else {"files": {}}


def finished_fingerprint(out_dir: Path) -> str | None:
    """The fingerprint of the run whose merge into `out_dir` last finished; None when none did (or one is writing)."""
    record = _read_record(out_dir)
    return record.get("fingerprint") if record.get("state") == "complete" else None


@contextlib.contextmanager
def merging(out_dir: Path, fingerprint: str) -> Iterator[list[Path]]:
    """Write a merge of the run of `fingerprint` into `out_dir`: append each file written to the yielded list."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(out_dir):
            yield from _merge(out_dir, fingerprint)
    except BaseException:
        if created:  # a merge refused before it wrote anything leaves no folder behind
            for name in (RECORD, LOCK):
                (out_dir / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    with open(out_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise ConfigError(f"another merge is writing into {out_dir}: wait for it, or merge with "
                              "merged_dir=<another folder>") from None
        yield


def _merge(out_dir: Path, fingerprint: str) -> Iterator[list[Path]]:
    leftovers = [name for name in os.listdir(out_dir) if is_temporary(name)]
    for name in leftovers:
        remove(out_dir / name)
    record = _read_record(out_dir)
    if leftovers or record.get("state") == "writing":
        print(f"merge: the last merge into {out_dir} was interrupted; removed {len(leftovers)} temporary file(s), "
              "its outputs are written again now", file=sys.stderr)
    files: dict[str, str] = dict(record["files"])
    write_json(out_dir / RECORD, {"state": "writing", "fingerprint": fingerprint, "files": files})
    written: list[Path] = []
    yield written
    for path in written:
        if path.parent == out_dir:
            files[path.name] = fingerprint
    for name, other in sorted(files.items()):
        if other != fingerprint:
            _move_stale(out_dir, name, other)
            del files[name]
    write_json(out_dir / RECORD, {"state": "complete", "fingerprint": fingerprint, "files": files})


def _move_stale(out_dir: Path, name: str, fingerprint: str) -> None:
    source = out_dir / name
    if not source.exists():
        return
    target = out_dir / STALE / fingerprint / name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    print(f"merge: {name} came from an earlier run (fingerprint {fingerprint}): moved to {target.parent}/ (delete it "
          "when no longer needed)", file=sys.stderr)
