"""`depends_on`: another stage's run folder whose per-item outputs are this stage's inputs.

Paths are found through the upstream's `RunFolder`, the way the runtime itself finds them — its manifest's plan says
which shard holds an item, and that shard's store says where its outputs are and whether they validate — so a chained
stage never guesses a layout, and an upstream output that is missing or broken becomes this item's error, naming the
stage to finish.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from shardprep.runtime.build import build_stage
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.manifest import Manifest
from shardprep.runtime.run_folder import MANIFEST, RunFolder
from shardprep.runtime.store import ShardStore


class MissingInput(RuntimeError):
    """The upstream stage has no valid output for this item (not run yet, failed, or broken)."""


class Upstream:
    def __init__(self, name: str, run_dir: str | Path) -> None:
        self.name = name
        self.folder = RunFolder(run_dir)
        self.run_dir = self.folder.path

    def check(self) -> None:
        if not self.folder.exists():
            raise ConfigError(f"depends_on.{self.name}={self.run_dir}: no run there ({MANIFEST} missing): launch "
                              "that stage first, or launch the chain with launch/pipeline.py")

    @cached_property
    def manifest(self) -> Manifest:
        return self.folder.manifest()

    @cached_property
    def _stores(self) -> list[ShardStore]:
        return self.folder.stores(self.manifest, build_stage(self.manifest.config).outputs)

    @cached_property
    def _shard_of(self) -> dict[str, int]:
        _, items = self.folder.checked_items(self.manifest)
        return self.folder.shard_of_items(self.manifest, items)

    def load(self) -> None:
        """Read the upstream manifest, stage and item list now (once per task, before items run in threads)."""
        _ = self._stores, self._shard_of  # both are cached on first access

    def paths(self, item_id: str) -> dict[str, Path]:
        """Output name -> validated path of `item_id`'s upstream outputs. Raises `MissingInput`."""
        shard = self._shard_of.get(item_id)
        if shard is None:
            raise MissingInput(f"{self.name}: item {item_id} is not in the run {self.run_dir}")
        store = self._stores[shard]
        paths = {}
        for name, output in store.outputs.items():
            path = store.path(item_id, output)
            if not store.is_valid(path, output):
                state = "invalid" if path.exists() else "missing"
                raise MissingInput(f"{self.name}: output {name!r} of item {item_id} is {state} in {self.run_dir} "
                                   f"(shard {shard}): finish that stage first (launch/status.py out_dir={self.run_dir})")
            paths[name] = path
        return paths
