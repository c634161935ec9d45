"""Command-line entry points shared by the scripts in launch/: run a stage, show status, resubmit.

Each prints one line `shardprep: error: ...` and exits 2 on a `ConfigError`, so a bad command never shows a
traceback and never submits anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shardprep.launch.merge_after import MergeAfter
from shardprep.runtime.config import load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.manifest import Manifest
from shardprep.runtime.run import Submission, prepare, submit, wait
from shardprep.runtime.status import (
    as_json, as_table, group_statuses, groups_as_json, groups_as_table, shard_statuses,
)

EXIT_CONFIG = 2


def guarded(main: Callable[[Sequence[str]], int]) -> Callable[[Sequence[str] | None], None]:
    def entry(argv: Sequence[str] | None = None) -> None:
        try:
            code = main(sys.argv[1:] if argv is None else argv)
        except ConfigError as error:
            print(f"shardprep: error: {error}", file=sys.stderr)
            code = EXIT_CONFIG
        sys.exit(code)

    return entry


def run_stage(stage: str | None) -> Callable[[Sequence[str] | None], None]:
    """The `main` of a stage launcher (`launch/depth.py` is `run_stage("depth")`)."""

    def main(argv: Sequence[str]) -> int:
        defaults = [f"stage={stage}"] if stage else []
        config = load_config(argv, defaults=defaults)
        run_dir, manifest = prepare(config)
        merge = MergeAfter(config, [*defaults, *argv], run_dir) if config.get("merge_after") else None
        submission = submit(config, run_dir, manifest)
        describe_submission(submission, config)

        def finish() -> int:
            return wait_and_report(submission) if submission.backend != "slurm" or config["wait"] else 0

        return merge(submission, finish) if merge else finish()

    return guarded(main)


def describe_submission(submission: Submission, config: dict[str, Any]) -> None:
    shards = submission.shards
    span = f"shard {shards[0]}" if len(shards) == 1 else f"shards {shards[0]}-{shards[-1]}"
    if len(shards) > 1 and shards != list(range(shards[0], shards[-1] + 1)):
        span = f"shards {','.join(map(str, shards))}"
    status = (
        f"python launch/status.py dataset={config['dataset']['name']} stage={config['stage']['name']} "
        f"out_dir={submission.run_dir}"
    )
    print(f"submitted {submission.backend} job {submission.job_id}: {len(shards)} task(s), {span}")
    print(f"  outputs:  {submission.run_dir / 'checkpoints'}")
    print(f"  logs:     {submission.run_dir / 'logs'}/{submission.job_id}*/")
    print(f"  progress: {status}")
    if submission.backend == "slurm":
        print(f"            squeue -j {submission.job_id}    (re-run the same command to resume)")


def wait_and_report(submission: Submission) -> int:
    failures = wait(submission)
    rows = shard_statuses(submission.run_dir)
    print(as_table(rows))
    for line in failures:
        print(f"task failed: {line}", file=sys.stderr)
    return 1 if failures or any(row.todo for row in rows) else 0


@guarded
def status_main(argv: Sequence[str]) -> int:
    config = load_config(argv, strict=False)  # only reads a run: model paths the stage config leaves open do not matter
    run_dir = Path(config["out_dir"]).expanduser().resolve()
    manifest = Manifest.load(run_dir)
    if config["by"] == "group":
        groups = group_statuses(run_dir)
        print(json.dumps(groups_as_json(groups), indent=1) if config["output"] == "json" else groups_as_table(groups))
        return 0
    if config["by"] != "shard":
        raise ConfigError(f"by={config['by']!r}: use by=shard (per shard, the default) or by=group (per item group)")
    rows = shard_statuses(run_dir)
    if config["output"] == "json":
        print(json.dumps(as_json(rows), indent=1))
    else:
        print(as_table(rows))
    if config["resubmit"]:
        incomplete = [row.shard for row in rows if row.todo]
        if not incomplete:
            print("nothing to resubmit: every shard is complete")
            return 0
        manifest.config["cluster"] = config["cluster"]
        submission = submit(manifest.config, run_dir, manifest, incomplete)
        describe_submission(submission, config)
        return wait_and_report(submission) if submission.backend != "slurm" or config["wait"] else 0
    return 0
