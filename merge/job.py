"""What every merge gets, and how the merge of a run is chosen.

The merge of a run is picked by the run's stage name: `conf/merge/<stage name>.yaml`, whose `_target_` is a class
(or any callable) built with that file's other keys and then called with a `MergeJob`; it writes its training files
under `job.out_dir` (atomically) and returns their paths. A new stage brings its own merge by adding that one
file: nothing here changes (docs/merge.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hydra.utils import instantiate

from shardprep.merge.folder import merging
from shardprep.runtime.config import load_config, positive_int
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.manifest import Manifest
from shardprep.runtime.run_folder import MANIFEST, RunFolder

# Like launch/depth.py: without stage=..., the merge is that of the depth run (or the dataset's only run).
DEFAULTS = ("stage=depth",)


@dataclass
class MergeJob:
    """A finished (or partial) run to merge, and the merge command's options."""

    config: dict[str, Any]  # the merge command's resolved config; the run's own is `manifest.config`
    run_dir: Path
    manifest: Manifest
    folder: RunFolder
    out_dir: Path
    format: str | None  # None: the merge's default
    workers: int
    allow_partial: bool


class Merger(Protocol):
    def __call__(self, job: MergeJob) -> list[Path]: ...


def load_merge(argv: Sequence[str]) -> tuple[Merger, MergeJob]:
    """Compose the config, find the run, and build the merge its stage names."""
    config = load_config(argv, defaults=DEFAULTS, strict=False)
    run_dir = find_run(RunFolder(config["out_dir"]).path, argv)
    folder = RunFolder(run_dir)
    manifest = folder.manifest()
    stage = manifest.config["stage"]["name"]
    config = load_config([*argv, f"out_dir={run_dir}"], defaults=[*DEFAULTS, f"+merge={stage}"], strict=False)
    try:
        merger = instantiate(config["merge"], _convert_="all")
    except Exception as error:  # Hydra wraps the constructor's error; the user fixes conf/merge/<stage>.yaml
        raise ConfigError(f"conf/merge/{stage}.yaml: cannot build its merge: {error}") from None
    job = MergeJob(
        config=config,
        run_dir=run_dir,
        manifest=manifest,
        folder=folder,
        out_dir=Path(config["merged_dir"]).expanduser().resolve(),
        format=config["format"],
        workers=positive_int(config, "workers"),
        allow_partial=bool(config["allow_partial"]),
    )
    return merger, job


def find_run(run_dir: Path, argv: Sequence[str]) -> Path:
    """`run_dir`, or, when the command named neither stage nor out_dir and the default (depth) run is not there, the
    dataset's one run beside it: `launch/merge.py dataset=dsec` merges the DSEC events run."""
    if RunFolder(run_dir).exists() or any(arg.split("=")[0] in ("stage", "out_dir") for arg in argv):
        return run_dir
    runs = sorted(path.parent for path in run_dir.parent.glob(f"*/{MANIFEST}"))
    if len(runs) == 1:
        return runs[0]
    if runs:
        raise ConfigError(f"no run in {run_dir}; this dataset has runs of stages {[path.name for path in runs]}: "
                          "name one with stage=<name>")
    return run_dir


def published_report(argv: Sequence[str], run_dir: Path) -> str | None:
    """What the run's merge says about what it published (its optional `report(out_dir, dataset_name)`), for
    `status by=group`; None when the merge has no such report or nothing was published."""
    config = RunFolder(run_dir).manifest().config
    stage = config["stage"]["name"]
    try:
        merged = load_config([*argv, f"out_dir={run_dir}"], defaults=[*DEFAULTS, f"+merge={stage}"], strict=False)
        merger = instantiate(merged["merge"], _convert_="all")
    except Exception:  # a stage without a merge, or one that cannot be built here: nothing to report
        return None
    report = getattr(merger, "report", None)
    return report(Path(merged["merged_dir"]).expanduser(), config["dataset"]["name"]) if report else None


def write_merged(merger: Merger, job: MergeJob) -> list[Path]:
    """Run `merger` into `job.out_dir` as the merged folder's one writer (merge/folder.py)."""
    with merging(job.out_dir, job.manifest.fingerprint) as written:
        written.extend(merger(job))
    return written


def run_merge(argv: Sequence[str]) -> list[Path]:
    merger, job = load_merge(argv)
    return write_merged(merger, job)
