"""Per-shard checkpoint folder: which outputs exist and validate, writing new ones, and the error log.

Layout under the run folder (paths given by runtime/run_folder.py):
    checkpoints/shard-00003/<item id>.<suffix>   one file per item and output
    errors/shard-00003.jsonl                     one line per failed attempt at an item
    progress/shard-00003.valid.json              validation cache: files found valid, by name, size, mtime, inode

A shard lists its folder once per run, validates what it finds, and removes temporary files left by a killed writer.
Only that shard's task writes its folder (one launch at a time, runtime/run_folder.py), so no locking is needed.

Validating a file means opening its zip and reading headers (about a millisecond); the cache remembers the files that
validated under this fingerprint with their size, mtime_ns and inode, so a resume or a status re-opens only files
that changed since. A truncated, rewritten or replaced file changes at least one of the three and is validated again.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardprep.runtime.atomic import append_line, atomic_path, is_temporary, remove, write_json
from shardprep.runtime.npz import array_bytes, member_shapes, save_npz
from shardprep.runtime.outputs import ArrayOutput, Artifact, FileOutput, Output

FINGERPRINT_KEY = "fingerprint"
CACHE_VERSION = 1


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


@dataclass(frozen=True)
class ErrorRecord:
    item: str
    error: str
    traceback: str
    attempt: int
    time: float
    job: str


@dataclass(frozen=True)
class Scan:
    """What a shard folder holds: valid file names, the items with every output valid, and how many present files
    failed validation."""

    valid: frozenset[str]
    complete: frozenset[str]
    invalid: int


class ShardStore:
    """Checkpoints, validation cache and error log of one shard of one run."""

    def __init__(self, folder: Path, error_log: Path, cache_path: Path, outputs: Sequence[Output], fingerprint: str,
                 valid_since: float = 0.0, attempts_since: float = 0.0) -> None:
        """`valid_since`: when the run's current fingerprint took effect. NPZ outputs carry the fingerprint; other
        files cannot, so one older than this was made under other settings and is redone. `attempts_since`: failed
        attempts recorded before it do not count."""
        self.folder = folder
        self.error_log = error_log
        self.cache_path = cache_path
        self.outputs = {output.name: output for output in outputs}
        self.fingerprint = fingerprint
        self.valid_since = valid_since
        self.attempts_since = attempts_since
        self._fingerprint_bytes = array_bytes(np.array(fingerprint))
        # Longest suffix first, so `x.events.npz` is an `events.npz` output, not an `npz` one.
        self._by_suffix = sorted(((f".{o.suffix}", o) for o in outputs), key=lambda pair: -len(pair[0]))
        self._known: dict[str, list[int]] = {}  # the validation cache being kept: name -> [size, mtime_ns, inode]
        self._known_lock = threading.Lock()

    def path(self, item_id: str, output: Output) -> Path:
        return self.folder / f"{item_id}.{output.suffix}"

    def list_files(self, remove_temporary: bool = False) -> dict[str, Path]:
        """Names of the files now in the folder, temporary ones left out. Only the shard's own task may pass
        `remove_temporary`: anyone else could remove a file that a running task is writing."""
        return {entry.name: Path(entry.path) for entry in self._entries(remove_temporary)}

    def _entries(self, remove_temporary: bool) -> list[os.DirEntry[str]]:
        if not self.folder.is_dir():
            return []
        found = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if not is_temporary(entry.name):
                    found.append(entry)
                elif remove_temporary:
                    remove(Path(entry.path))
        return found

    def output_of(self, name: str) -> tuple[str, Output] | None:
        """(item id, output) of a file name in this folder; None for a file no output of the stage would write."""
        for suffix, output in self._by_suffix:
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)], output
        return None

    def check_folder(self, remove_temporary: bool = False) -> Scan:
        """Validate every file of the folder, re-opening only those the cache does not vouch for.

        The shard's own task passes `remove_temporary` and then saves the cache (`save_cache`); readers such as status
        only use it.
        """
        cached = self._load_cache()
        known: dict[str, list[int]] = {}
        valid = set()
        outputs_of: Counter[str] = Counter()  # item id -> how many of its outputs are valid
        invalid = 0
        for entry in self._entries(remove_temporary):
            owner = self.output_of(entry.name)
            if owner is None:
                continue
            stat = entry.stat(follow_symlinks=False)
            key = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
            cacheable = entry.is_file(follow_symlinks=False)  # folders change inside without changing their stat
            if (cacheable and cached.get(entry.name) == key) or self.is_valid(Path(entry.path), owner[1]):
                valid.add(entry.name)
                outputs_of[owner[0]] += 1
                if cacheable:
                    known[entry.name] = key
            else:
                invalid += 1
        with self._known_lock:
            self._known = known
        complete = frozenset(item for item, count in outputs_of.items() if count == len(self.outputs))
        return Scan(frozenset(valid), complete, invalid)

    def scan(self, item_ids: Iterable[str]) -> tuple[dict[str, frozenset[str]], int]:
        """For each item, the outputs still to produce; and how many present files failed validation.

        Files that exist but do not validate (truncated, wrong keys or shapes, older fingerprint) count as missing and
        are overwritten when the item is redone. Temporary leftovers are removed and the cache saved: only the
        shard's own task calls this.
        """
        found = self.check_folder(remove_temporary=True)
        self.save_cache()
        missing: dict[str, frozenset[str]] = {}
        for item_id in item_ids:
            todo = [o.name for o in self.outputs.values() if f"{item_id}.{o.suffix}" not in found.valid]
            if todo:
                missing[item_id] = frozenset(todo)
        return missing, found.invalid

    def _cache_header(self) -> dict[str, object]:
        return {"version": CACHE_VERSION, "fingerprint": self.fingerprint, "valid_since": self.valid_since,
                "outputs": sorted(f"{o.name}.{o.suffix}" for o in self.outputs.values())}

    def _load_cache(self) -> dict[str, list[int]]:
        try:
            data = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            return {}  # none yet, or torn: everything is validated again
        if not isinstance(data, dict) or data.get("header") != self._cache_header():
            return {}  # made under other settings: vouches for nothing
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def save_cache(self) -> None:
        """Write the cache of the files known valid now. The shard's task only; a lost cache costs revalidation."""
        with self._known_lock:
            files = dict(self._known)
        write_json(self.cache_path, {"header": self._cache_header(), "files": files}, durable=False)

    def _remember(self, path: Path) -> None:
        stat = path.stat()
        if path.is_file():
            with self._known_lock:
                self._known[path.name] = [stat.st_size, stat.st_mtime_ns, stat.st_ino]

    def is_valid(self, path: Path, output: Output) -> bool:
        try:
            self.validate(path, output)
        except Exception:  # any failure to read means "redo", whatever the library raised
            return False
        return True

    def validate(self, path: Path, output: Output) -> None:
        if isinstance(output, FileOutput):
            if path.stat().st_mtime < self.valid_since:
                raise ValueError(f"{path}: made before the run's current settings (force=true)")
            output.validate(path)
            return
        with zipfile.ZipFile(path) as archive:
            shapes = member_shapes(archive, output.arrays)
            for key, shape in output.arrays.items():
                if not _shape_matches(shapes[key], shape):
                    raise ValueError(f"{path}: {key!r} has shape {shapes[key]}, expected {shape}")
            if archive.read(f"{FINGERPRINT_KEY}.npy") != self._fingerprint_bytes:
                raise ValueError(f"{path}: written by a run with another fingerprint")

    def write(self, item_id: str, artifacts: Mapping[str, Artifact]) -> None:
        """Write each output of one item to a temporary name, validate it, and only then rename it into place.

        Every output is attempted even if one fails (the others of the item are still written); the first
        failure is raised afterwards so the item is recorded as failed and its missing outputs are redone.
        """
        failures = []
        for name, artifact in artifacts.items():
            output = self.outputs[name]
            try:
                with atomic_path(self.path(item_id, output)) as tmp:
                    if isinstance(output, ArrayOutput):
                        save_npz(tmp, {**artifact, FINGERPRINT_KEY: np.array(self.fingerprint)})
                    else:
                        artifact(tmp)
                    self.validate(tmp, output)
                self._remember(self.path(item_id, output))
            except Exception as error:  # any failure of one output; the others still get their chance
                failures.append(error)
        if failures:
            raise failures[0]

    def record_error(self, item_id: str, error: BaseException, attempt: int, job: str) -> None:
        record = ErrorRecord(
            item=item_id,
            error=f"{type(error).__name__}: {error}",
            traceback="".join(traceback.format_exception(error)),
            attempt=attempt,
            time=time.time(),
            job=job,
        )
        # One short append per line: lines from a killed task are whole or absent, and a broken tail is ignored.
        append_line(self.error_log, json.dumps(record.__dict__))

    def errors(self) -> list[ErrorRecord]:
        if not self.error_log.exists():
            return []
        records = []
        for line in self.error_log.read_text().splitlines():
            try:
                records.append(ErrorRecord(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return records

    def attempts(self) -> Counter[str]:
        """Failed attempts that count against max_attempts, per item id: those since the last reset."""
        return Counter(record.item for record in self.errors() if record.time >= self.attempts_since)


def _shape_matches(actual: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(actual) == len(expected) and all(e is None or a == e for a, e in zip(actual, expected))
