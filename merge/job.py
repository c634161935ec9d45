"""What every merge gets, how the merge of a run is chosen, and running it now or as a SLURM job after the array.

The merge of a run is picked by the run's stage name: `conf/merge/<stage name>.yaml`, whose `_target_` is a class
(or any callable) built with that file's other keys and then called with a `MergeJob`; it writes its training files
under `job.out_dir` (atomically) and returns their paths. A new stage brings its own merge by adding that one
file: nothing here changes (docs/merge.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hydra.utils import instantiate

from shardprep.runtime.config import load_config, positive_int
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.executor import make_executor
from shardprep.runtime.manifest import Manifest
from shardprep.runtime.run import Submission

# Like launch/depth.py: without stage=..., the merge is that of the depth run.
DEFAULTS = ("stage=depth",)


@dataclass
class MergeJob:
    """A finished (or partial) run to merge, and the merge command's options."""

    config: dict[str, Any]  # the merge command's resolved config; the run's own is `manifest.config`
    run_dir: Path
    manifest: Manifest
    out_dir: Path
    format: str | None  # None: the merge's default
    workers: int
    allow_partial: bool


class Merger(Protocol):
    def __call__(self, job: MergeJob) -> list[Path]: ...


def load_merge(argv: Sequence[str]) -> tuple[Merger, MergeJob]:
    """Compose the config, find the run, and build the merge its stage names."""
    config = load_config(argv, defaults=DEFAULTS, strict=False)
    run_dir = Path(config["out_dir"]).expanduser().resolve()
    manifest = Manifest.load(run_dir)
    stage = manifest.config["stage"]["name"]
    config = load_config(argv, defaults=[*DEFAULTS, f"+merge={stage}"], strict=False)
    try:
        merger = instantiate(config["merge"], _convert_="all")
    except Exception as error:  # Hydra wraps the constructor's error; the user fixes conf/merge/<stage>.yaml
        raise ConfigError(f"conf/merge/{stage}.yaml: cannot build its merge: {error}") from None
    job = MergeJob(
        config=config,
        run_dir=run_dir,
        manifest=manifest,
        out_dir=Path(config["merged_dir"]).expanduser().resolve(),
        format=config["format"],
        workers=positive_int(config, "workers"),
        allow_partial=bool(config["allow_partial"]),
    )
    return merger, job


def run_merge(argv: Sequence[str]) -> list[Path]:
    merger, job = load_merge(argv)
    return merger(job)


class MergeTask:
    """The merge as a submitit job: the same command line, with the run's folders made absolute."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)

    def __call__(self) -> list[str]:
        return [str(path) for path in run_merge(self.argv)]


class MergeAfter:
    """`merge_after=true` on a stage launch. Built before submission, so a bad merge config submits nothing.

    SLURM: the merge is submitted right after the array, to start only if every array task succeeded (`afterok`;
    cancelled if one fails). Local/debug: it runs in this process once the shards are done.
    """

    def __init__(self, config: dict[str, Any], argv: Sequence[str], run_dir: Path) -> None:
        merged_dir = Path(config["merged_dir"]).expanduser().resolve()
        self.config = config
        self.argv = [*argv, f"out_dir={run_dir}", f"merged_dir={merged_dir}"]
        load_merge(self.argv)

    def __call__(self, submission: Submission, finish: Callable[[], int]) -> int:
        if submission.backend != "slurm":
            code = finish()
            if code == 0:
                for path in run_merge(self.argv):
                    print(f"merged: {path}")
            return code
        config = self.config
        cluster = {**config["cluster"], "gpus_per_task": 0, "cpus_per_task": positive_int(config, "workers")}
        cluster["additional"] = {**(cluster.get("additional") or {}), "kill_on_invalid_dep": "yes"}
        name = f"shardprep-merge-{config['dataset']['name']}-{config['stage']['name']}"
        executor = make_executor(cluster, "slurm", submission.run_dir / "logs", name)
        executor.update_parameters(dependency=f"afterok:{submission.job_id}")
        job = executor.submit(MergeTask(self.argv))
        print(f"submitted merge job {job.job_id}: starts after job {submission.job_id} succeeds")
        code = finish()
        if not config["wait"]:
            return code
        try:
            paths = job.result()
        except Exception as error:  # submitit wraps the job's exception; its last line says what went wrong
            lines = [line for line in str(error).splitlines() if line.strip()]
            print(f"merge job {job.job_id} failed: {lines[-1] if lines else error}", file=sys.stderr)
            return code or 1
        for path in paths:
            print(f"merged: {path}")
        return code
