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
from collections.abc import Iterable, Mapping, Sequence
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
        return cls(**data)


def items_digest(items: Sequence[Item]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.id.encode() + b"\0")
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fingerprint(stage_config: dict[str, Any], files: Iterable[Path], digest_of_items: str,
                upstream: Mapping[str, str] | None = None) -> str:
    """Hash of what determines the outputs: the stage config, the contents of its files (not their paths: moving data
    keeps a run valid), the items, and the fingerprints of the upstream runs it reads (if any)."""
    missing = [str(path) for path in files if not Path(path).is_file()]
    if missing:
        raise ConfigError(f"file not found: {missing[0]} (check the paths in the stage/dataset config)")
    parts = {
        "stage": stage_config,
        "items": digest_of_items,
        "files": sorted(file_digest(Path(path)) for path in files),
    }
    if upstream:  # absent for stages without one, so their fingerprints stay what they were
        parts["upstream"] = dict(upstream)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
