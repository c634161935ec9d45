"""Per-shard checkpoint folder: which outputs exist and validate, writing new ones, and the error log.

Layout under the run folder (paths given by runtime/run_folder.py):
    checkpoints/shard-00003/<item id>.<suffix>   one file per item and output
    errors/shard-00003.jsonl                     one line per failed attempt at an item
    progress/shard-00003.valid.npz               validation cache: files found valid, by name, size, mtime, inode

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

from shardprep.runtime.atomic import append_line, atomic_path, is_temporary, remove
from shardprep.runtime.npz import StreamedArray, array_bytes, member_shapes, write_npz, write_npz_at_once
from shardprep.runtime.outputs import ArrayOutput, Artifact, FileOutput, Output

FINGERPRINT_KEY = "fingerprint"
CACHE_VERSION = 2


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
        # The validation cache being kept: files found valid by the last check, and those written since.
        self._known = Listing.empty()
        self._added: dict[str, tuple[int, int, int]] = {}  # name -> (size, mtime_ns, inode)
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

        A million checkpoints are checked by `status`, so the per-file work is one listing entry and one `stat`
        (relative to the open folder); the comparison with the cache is done on arrays. The shard's own task passes
        `remove_temporary` and then saves the cache (`save_cache`); readers such as status only use it.
        """
        listing = self._listing(remove_temporary)
        names = listing.names
        owners = self._owners(names)
        vouched = listing.vouched_by(self._load_cache()) & listing.regular
        valid = np.zeros(len(names), dtype=bool)
        valid[vouched] = True
        for i in np.flatnonzero(~vouched):
            owner = owners[i]
            if owner is not None:
                valid[i] = self.is_valid(self.folder / names[i], owner[1])
        has_owner = np.fromiter((owner is not None for owner in owners), bool, len(names))
        valid &= has_owner
        invalid = int((has_owner & ~valid).sum())
        keep = valid & listing.regular  # folders change inside without changing their stat: never cached
        with self._known_lock:
            self._known = listing.subset(keep)
            self._added = {}
        valid_names = [names[i] for i in np.flatnonzero(valid)]
        valid_items = [owners[i][0] for i in np.flatnonzero(valid)]
        if len(self.outputs) == 1:
            complete = frozenset(valid_items)
        else:
            outputs_of = Counter(valid_items)
            complete = frozenset(item for item, count in outputs_of.items() if count == len(self.outputs))
        return Scan(frozenset(valid_names), complete, invalid)

    def _listing(self, remove_temporary: bool) -> Listing:
        """Names, kinds and stats of the folder's files, temporary ones left out (or removed)."""
        try:
            descriptor = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return Listing.empty()
        try:
            with os.scandir(descriptor) as entries:
                listed = list(entries)
            if any(is_temporary(entry.name) for entry in listed):
                if remove_temporary:
                    for entry in listed:
                        if is_temporary(entry.name):
                            remove(self.folder / entry.name)
                listed = [entry for entry in listed if not is_temporary(entry.name)]
            names = [entry.name for entry in listed]
            regular = [entry.is_file(follow_symlinks=False) for entry in listed]
            try:
                stats = [os.stat(name, dir_fd=descriptor, follow_symlinks=False) for name in names]
            except FileNotFoundError:  # a file went away since the listing (a task replacing it): one at a time
                kept = [(name, kind, _stat_or_none(name, descriptor)) for name, kind in zip(names, regular)]
                kept = [entry for entry in kept if entry[2] is not None]
                names, regular, stats = [e[0] for e in kept], [e[1] for e in kept], [e[2] for e in kept]
        finally:
            os.close(descriptor)
        count = len(names)
        return Listing(names, np.array(regular, dtype=bool),
                       np.fromiter((stat.st_size for stat in stats), np.int64, count),
                       np.fromiter((stat.st_mtime_ns for stat in stats), np.int64, count),
                       np.fromiter((stat.st_ino for stat in stats), np.uint64, count))

    def _owners(self, names: Sequence[str]) -> list[tuple[str, Output] | None]:
        if len(self._by_suffix) == 1:  # the usual stage: one output, so one suffix test per name
            suffix, output = self._by_suffix[0]
            cut = -len(suffix)
            return [(name[:cut], output) if name.endswith(suffix) and len(name) > -cut else None for name in names]
        return [self.output_of(name) for name in names]

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

    def _cache_header(self) -> str:
        return json.dumps({"version": CACHE_VERSION, "fingerprint": self.fingerprint, "valid_since": self.valid_since,
                           "outputs": sorted(f"{o.name}.{o.suffix}" for o in self.outputs.values())}, sort_keys=True)

    def _load_cache(self) -> Listing:
        try:
            with np.load(self.cache_path, allow_pickle=False) as data:
                if str(data["header"]) != self._cache_header():
                    return Listing.empty()  # made under other settings: vouches for nothing
                return Listing.from_arrays({key: data[key] for key in Listing.KEYS})
        except Exception:  # none yet, torn or of another format: everything is validated again
            return Listing.empty()

    def save_cache(self) -> None:
        """Write the cache of the files known valid now. The shard's task only; a lost cache costs revalidation."""
        with self._known_lock:
            known = self._known.merged(self._added)
        write_npz(self.cache_path, {"header": np.array(self._cache_header()), **known.as_arrays()})

    def _remember(self, path: Path) -> None:
        stat = path.stat()
        if path.is_file():
            with self._known_lock:
                self._added[path.name] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)

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
            _check_shapes(path, member_shapes(archive, output.arrays), output)
            if archive.read(f"{FINGERPRINT_KEY}.npy") != self._fingerprint_bytes:
                raise ValueError(f"{path}: written by a run with another fingerprint")

    def write(self, item_id: str, artifacts: Mapping[str, Artifact]) -> None:
        """Write each output of one item to a temporary name, validate it, and only then rename it into place
        (an NPZ output's arrays are validated before they are written, another file once written).

        Every output is attempted even if one fails (the others of the item are still written); the first
        failure is raised afterwards so the item is recorded as failed and its missing outputs are redone.
        """
        failures = []
        for name, artifact in artifacts.items():
            output = self.outputs[name]
            path = self.path(item_id, output)
            try:
                if isinstance(output, ArrayOutput):
                    # Checked on the arrays, then written: reading the archive back would only parse again what
                    # was just built from them, at about the cost of building it.
                    arrays = {**artifact, FINGERPRINT_KEY: np.array(self.fingerprint)}
                    _check_shapes(path, {key: _shape(arrays[key]) for key in output.arrays if key in arrays},
                                  output)
                    write_npz_at_once(path, arrays)
                else:
                    with atomic_path(path) as tmp:
                        artifact(tmp)
                        self.validate(tmp, output)
                self._remember(path)
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


@dataclass(frozen=True)
class Listing:
    """Files of a shard folder with the stat fields that change when a file is truncated, rewritten or replaced:
    what the folder holds now, or (the validation cache) what was found valid.

    On disk (progress/shard-N.valid.npz): the names NUL-joined as UTF-8 bytes (no file name holds a NUL) and one
    array per field, so 50 000 entries load in milliseconds instead of parsing one JSON record each.
    """

    KEYS = ("names", "size", "mtime_ns", "inode")

    names: list[str]
    regular: np.ndarray  # bool: a plain file (only those are cached)
    size: np.ndarray  # int64
    mtime_ns: np.ndarray  # int64
    inode: np.ndarray  # uint64

    @classmethod
    def empty(cls) -> Listing:
        return cls([], np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Listing:
        raw = arrays["names"].tobytes().decode()
        names = raw.split("\0") if raw else []
        if not len(names) == len(arrays["size"]) == len(arrays["mtime_ns"]) == len(arrays["inode"]):
            raise ValueError("validation cache: fields of different lengths")
        return cls(names, np.ones(len(names), bool), arrays["size"].astype(np.int64),
                   arrays["mtime_ns"].astype(np.int64), arrays["inode"].astype(np.uint64))

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"names": np.frombuffer("\0".join(self.names).encode(), dtype=np.uint8), "size": self.size,
                "mtime_ns": self.mtime_ns, "inode": self.inode}

    def vouched_by(self, cache: Listing) -> np.ndarray:
        """(files,) bool: the cache holds the file with the same size, mtime_ns and inode."""
        if cache.names == self.names:  # nothing added or removed since: the listing comes in the same order
            return (cache.size == self.size) & (cache.mtime_ns == self.mtime_ns) & (cache.inode == self.inode)
        position = dict(zip(cache.names, range(len(cache.names))))
        where = np.fromiter((position.get(name, -1) for name in self.names), np.int64, len(self.names))
        known = where >= 0
        where = where[known]
        same = np.zeros(len(self.names), dtype=bool)
        same[known] = ((cache.size[where] == self.size[known]) & (cache.mtime_ns[where] == self.mtime_ns[known])
                       & (cache.inode[where] == self.inode[known]))
        return same

    def subset(self, keep: np.ndarray) -> Listing:
        return Listing([self.names[i] for i in np.flatnonzero(keep)], self.regular[keep], self.size[keep],
                       self.mtime_ns[keep], self.inode[keep])

    def merged(self, added: Mapping[str, tuple[int, int, int]]) -> Listing:
        """This listing with the files of `added` put in (replacing an entry of the same name)."""
        if not added:
            return self
        base = self.subset(np.fromiter((name not in added for name in self.names), bool, len(self.names)))
        fields = list(zip(*added.values()))
        return Listing(base.names + list(added), np.ones(len(base.names) + len(added), bool),
                       np.concatenate([base.size, np.array(fields[0], np.int64)]),
                       np.concatenate([base.mtime_ns, np.array(fields[1], np.int64)]),
                       np.concatenate([base.inode, np.array(fields[2], np.uint64)]))


def _stat_or_none(name: str, folder: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _shape(value: np.ndarray | StreamedArray) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, StreamedArray) else np.shape(value)


def _check_shapes(path: Path, shapes: Mapping[str, tuple[int, ...]], output: ArrayOutput) -> None:
    """Raise unless every array of `output`'s schema is in `shapes` with a matching shape."""
    for key, expected in output.arrays.items():
        if key not in shapes:
            raise ValueError(f"{path}: no array {key!r} (output {output.name!r} needs {sorted(output.arrays)})")
        actual = shapes[key]
        if len(actual) != len(expected) or any(e is not None and a != e for a, e in zip(actual, expected)):
            raise ValueError(f"{path}: {key!r} has shape {actual}, expected {expected}")
