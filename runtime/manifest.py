"""The run manifest: what a run folder was made with, so a re-run can resume it or refuse to mix.

`manifest.json` holds the resolved config, the shard plan, the item count and a digest of the item ids, the code
version, and the fingerprint: a hash of everything that changes outputs (stage config, the dataset's annotation files,
model configs and checkpoints). Reading and writing it is the run folder's business (runtime/run_folder.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shardprep.datasets.base import Item
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.sharding import Plan


@dataclass
class Manifest:
    config: dict[str, Any]
    plan: Plan
    item_count: int
    items_digest: str
    fingerprint: str
    code_version: str
    created: float = field(default_factory=time.time)
    # When `fingerprint` took effect (creation, or the force=true that changed it): older files are stale. By the run
    # folder's filesystem clock (runtime/fs_clock.py), the clock that stamps the files' mtimes, not a node's.
    fingerprint_since: float = field(default_factory=time.time)
    # Failed attempts before this time do not count against max_attempts (reset by force=true, a changed fingerprint,
    # or retry_failed=true).
    attempts_since: float = 0.0
    # What the fingerprint hashed besides the stage config (in `config`): each file's path and digest, the upstream
    # runs' fingerprints; so a refused launch can name what changed. Empty in manifests of older versions.
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def shards(self) -> int:
        return len(self.plan)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["plan"] = [tuple(bounds) for bounds in data["plan"]]
        # A manifest of an older version has no fingerprint_since: its files are as valid as they were then.
        data.setdefault("fingerprint_since", 0.0)
        data.setdefault("attempts_since", 0.0)
        data.setdefault("inputs", {})
        return cls(**data)


def items_digest(items: Sequence[Item]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.id.encode() + b"\0")
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fingerprint_inputs(files: Iterable[Path], upstream: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a fingerprint hashes besides the stage config and the items: [path, digest] of each file, and the
    fingerprints of the upstream runs (absent for stages without one, so their fingerprints stay what they were)."""
    files = list(files)
    missing = [str(path) for path in files if not Path(path).is_file()]
    if missing:
        raise ConfigError(f"file not found: {missing[0]} (check the paths in the stage/dataset config)")
    inputs: dict[str, Any] = {"files": [[str(path), file_digest(Path(path))] for path in files]}
    if upstream:
        inputs["upstream"] = dict(upstream)
    return inputs


def fingerprint(stage_config: dict[str, Any], inputs: Mapping[str, Any], digest_of_items: str) -> str:
    """Hash of what determines the outputs: the stage config, the contents of its files (not their paths: moving data
    keeps a run valid), the items, and the fingerprints of the upstream runs it reads (if any)."""
    parts = {
        "stage": stage_config,
        "items": digest_of_items,
        "files": sorted(digest for _, digest in inputs["files"]),
    }
    if inputs.get("upstream"):
        parts["upstream"] = dict(inputs["upstream"])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint_changes(old: Manifest, new: Manifest) -> list[str]:
    """What differs between two runs' fingerprinted settings, one entry each: stage keys with their old and new
    values, files whose content changed, upstream runs redone."""
    changes = [f"stage.{key}: {before!r} -> {after!r}"
               for key, before, after in _differences(old.config["stage"], new.config["stage"])]
    if not old.inputs:
        return changes or ["model or annotation files, or an upstream run (the old manifest does not record which)"]
    before = dict(map(tuple, old.inputs.get("files", [])))
    after = dict(map(tuple, new.inputs.get("files", [])))
    moved = sorted(before.values()) == sorted(after.values())
    if not moved:
        changes += [f"content of {path}" for path, digest in after.items() if path in before and before[path] != digest]
        changes += [f"new file {path}" for path in after if path not in before and after[path] not in before.values()]
        changes += [f"file no longer used: {path}" for path in before
                    if path not in after and before[path] not in after.values()]
    old_upstream, new_upstream = old.inputs.get("upstream", {}), new.inputs.get("upstream", {})
    changes += [f"upstream run {name} (redone: fingerprint {old_upstream.get(name)} -> {new_upstream.get(name)})"
                for name in sorted(set(old_upstream) | set(new_upstream))
                if old_upstream.get(name) != new_upstream.get(name)]
    return changes


def _differences(old: Any, new: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            yield from _differences(old.get(key, "<unset>"), new.get(key, "<unset>"), f"{prefix}{key}.")
    elif old != new:
        yield prefix.rstrip("."), old, new


def code_version() -> str:
    """`git describe` of the package's checkout, else the package version."""
    from shardprep import __version__

    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return __version__
    return f"{__version__}+{described.stdout.strip()}" if described.returncode == 0 else __version__
