"""Per-shard checkpoint folder: which outputs exist and validate, writing new ones, and the error log.

Layout under the run folder:
    checkpoints/shard-00003/<item id>.<suffix>   one file per item and output
    errors/shard-00003.jsonl                     one line per failed attempt at an item

A shard lists its folder once per run (no per-item stat calls), validates what it finds, and removes temporary files
left by a killed writer. Only that shard's task touches its folder, so no locking is needed.
"""

from __future__ import annotations

import json
import os
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shardprep.runtime.atomic import atomic_path, is_temporary, remove
from shardprep.runtime.npz import array_bytes, member_shapes, save_npz
from shardprep.stages.base import ArrayOutput, Artifact, FileOutput, Output

if TYPE_CHECKING:
    from shardprep.runtime.manifest import Manifest

FINGERPRINT_KEY = "fingerprint"


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


class ShardStore:
    """Checkpoints and error log of one shard of one run."""

    def __init__(self, run_dir: Path, shard: int, outputs: Sequence[Output], fingerprint: str,
                 valid_since: float = 0.0) -> None:
        """`valid_since`: when the run's current fingerprint took effect. NPZ outputs carry the fingerprint; other
        files cannot, so one older than this was made under other settings and is redone."""
        self.folder = run_dir / "checkpoints" / shard_name(shard)
        self.error_log = run_dir / "errors" / f"{shard_name(shard)}.jsonl"
        self.outputs = {output.name: output for output in outputs}
        self.fingerprint = fingerprint
        self.valid_since = valid_since
        self._fingerprint_bytes = array_bytes(np.array(fingerprint))

    @classmethod
    def for_run(cls, run_dir: Path, manifest: Manifest, shard: int, outputs: Sequence[Output]) -> ShardStore:
        """The store of one shard of the run described by `manifest`."""
        return cls(run_dir, shard, outputs, manifest.fingerprint, manifest.fingerprint_since)

    def path(self, item_id: str, output: Output) -> Path:
        return self.folder / f"{item_id}.{output.suffix}"

    def list_files(self, remove_temporary: bool = False) -> dict[str, Path]:
        """Names of the files now in the folder, temporary ones left out. Only the shard's own task may pass
        `remove_temporary`: anyone else could remove a file that a running task is writing."""
        if not self.folder.is_dir():
            return {}
        found = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if not is_temporary(entry.name):
                    found[entry.name] = Path(entry.path)
                elif remove_temporary:
                    remove(Path(entry.path))
        return found

    def scan(self, item_ids: Iterable[str]) -> tuple[dict[str, frozenset[str]], int]:
        """For each item, the outputs still to produce; and how many present files failed validation.

        Files that exist but do not validate (truncated, wrong keys or shapes, older fingerprint) count as missing and
        are overwritten when the item is redone.
        """
        files = self.list_files(remove_temporary=True)
        missing: dict[str, frozenset[str]] = {}
        invalid = 0
        for item_id in item_ids:
            todo = []
            for output in self.outputs.values():
                path = files.get(f"{item_id}.{output.suffix}")
                if path is None:
                    todo.append(output.name)
                elif not self.is_valid(path, output):
                    todo.append(output.name)
                    invalid += 1
            if todo:
                missing[item_id] = frozenset(todo)
        return missing, invalid

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
        self.error_log.parent.mkdir(parents=True, exist_ok=True)
        # One short append per line: lines from a killed task are whole or absent, and a broken tail is ignored.
        with open(self.error_log, "a") as log:
            log.write(json.dumps(record.__dict__) + "\n")

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
        """Failed attempts so far, per item id."""
        return Counter(record.item for record in self.errors())


def _shape_matches(actual: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(actual) == len(expected) and all(e is None or a == e for a, e in zip(actual, expected))
