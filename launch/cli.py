"""Command-line entry points shared by the scripts in launch/: run a stage, show status, resubmit.

Each prints one line `shardprep: error: ...` and exits 2 on a `ConfigError`, so a bad command never shows a
traceback and never submits anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from shardprep.launch.hydra_flags import run_hydra_flags, wants_hydra_flags
from shardprep.launch.merge_after import MergeAfter
from shardprep.merge.job import published_report
from shardprep.runtime.build import build_stage
from shardprep.runtime.config import CONF_DIR, load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.executor import resolve_backend
from shardprep.runtime.run import Launch, Submission, cancel, preflight, prepare, submit, wait
from shardprep.runtime.run_folder import RunFolder, planned_runs
from shardprep.runtime.status import (
    as_json, as_table, failures, failures_as_text, gave_up_hint, group_statuses, groups_as_json, groups_as_table, run_status,
    status_command,
)

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def guarded(main: Callable[[Sequence[str]], int], defaults: Sequence[str] = ()
            ) -> Callable[[Sequence[str] | None], None]:
    """The script's entry: Hydra's printing flags go to Hydra (launch/hydra_flags.py), everything else to `main`."""

    def entry(argv: Sequence[str] | None = None) -> None:
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            code = run_hydra_flags(args, defaults) if wants_hydra_flags(args) else main(args)
        except ConfigError as error:
            print(f"shardprep: error: {error}", file=sys.stderr)
            code = EXIT_CONFIG
        sys.exit(code)

    return entry


def run_stage(stage: str | None) -> Callable[[Sequence[str] | None], None]:
    """The `main` of a stage launcher (`launch/depth.py` is `run_stage("depth")`)."""

    defaults = [f"stage={stage}"] if stage else []

    def main(argv: Sequence[str]) -> int:
        if not stage and not any(arg.lstrip("+").startswith("stage=") for arg in argv):
            raise ConfigError(f"name the stage to run: stage=<{'|'.join(options('stage'))}> (nothing was submitted)")
        config = load_config(argv, defaults=defaults)
        launch = prepare(config)
        for note in launch.notes:
            print(note, file=sys.stderr)
        if config["dry_run"]:
            print(describe_plan(launch))
            return 0
        merge = None
        if config.get("merge_after"):
            with planned_runs({launch.folder.path: launch.manifest}):  # the merge is checked against this plan
                merge = MergeAfter(config, [*defaults, *argv], launch.folder.path)
        with launch.folder.lock():
            submission = submit(launch)
            describe_submission(submission, config)
            if submission.backend == "slurm":
                merge_job = merge.submit(submission.job_id) if merge else None
        if submission.backend == "slurm":
            # The lock is released: the array runs without this process, which may now wait (wait=true) or exit.
            return interruptible(submission, lambda: finish_slurm(submission, config, merge, merge_job))
        with launch.folder.lock():  # a local run lives in this process: nobody else may launch into it meanwhile
            return interruptible(submission, lambda: finish_local(submission, merge))

    return guarded(main, defaults)


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def finish_local(submission: Submission, merge: MergeAfter | None) -> int:
    code = wait_and_report(submission)
    if code == 0 and merge is not None:
        merge.run_here()
    return code


def finish_slurm(submission: Submission, config: dict[str, Any], merge: MergeAfter | None, merge_job: Any) -> int:
    if not config["wait"]:
        return 0
    code = wait_and_report(submission)
    if merge is not None:
        code = merge.wait(merge_job) or code
    return code


def interruptible(submission: Submission, finish: Callable[[], int]) -> int:
    """Run `finish`; on Ctrl-C say in one line what keeps running (SLURM) or stop what would not (local)."""
    try:
        return finish()
    except KeyboardInterrupt:
        if submission.backend == "slurm":
            print(f"\ninterrupted: job {submission.job_id} keeps running on SLURM (it does not need this command); "
                  f"watch it with {status_command(submission.run_dir)}, stop it with scancel {submission.job_id}",
                  file=sys.stderr)
        else:
            cancel(submission)
            print(f"\ninterrupted: the {submission.backend} shards were stopped; what they finished is kept: run the "
                  "same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def describe_plan(launch: Launch) -> str:
    """The dry run's answer: shard plan, resources asked, estimated disk use."""
    config, manifest = launch.config, launch.manifest
    cluster = config["cluster"]
    lines = [f"dry run: nothing written, nothing submitted; out_dir={launch.folder.path}",
             f"{manifest.item_count} items in {manifest.shards} shard(s), fingerprint {manifest.fingerprint}"]
    lines.append("shard  items  frames")
    for shard, ((start, end), frames) in enumerate(zip(manifest.plan, launch.frames)):
        lines.append(f"{shard:<5}  {end - start:<5}  {frames}")
    if launch.backend == "slurm":
        lines.append(f"resources: one {launch.backend} array of {manifest.shards} task(s) (at most "
                     f"{cluster['array_parallelism']} at once), each {cluster['cpus_per_task']} CPUs, "
                     f"{cluster['mem_gb']} GB, {cluster['gpus_per_task']} GPU(s), {cluster['time_min']} min; partition "
                     f"{cluster.get('partition') or '(default)'}")
    else:
        lines.append(f"resources: {manifest.shards} {launch.backend} process(es) on this machine")
    sizes = [output.estimated_bytes() for output in build_stage(config).outputs]
    known = sum(size for size in sizes if size is not None)
    estimate = f"about {known * manifest.item_count / 1e9:.3f} GB of checkpoints"
    if any(size is None for size in sizes):
        estimate += " plus outputs of unknown size"
    lines.append(f"disk: {estimate} ({manifest.item_count} items x {len(sizes)} output(s))")
    return "\n".join(lines)


def describe_submission(submission: Submission, config: dict[str, Any]) -> None:
    shards = submission.shards
    span = f"shard {shards[0]}" if len(shards) == 1 else f"shards {shards[0]}-{shards[-1]}"
    if len(shards) > 1 and shards != list(range(shards[0], shards[-1] + 1)):
        span = f"shards {','.join(map(str, shards))}"
    folder = RunFolder(submission.run_dir)
    print(f"submitted {submission.backend} job {submission.job_id}: {len(shards)} task(s), {span}")
    print(f"  outputs:  {folder.checkpoints}")
    for line in log_lines(submission):
        print(f"  {line}")
    print(f"  progress: {status_command(submission.run_dir)}")
    if submission.backend == "slurm":
        print(f"            squeue -j {submission.job_id}    (re-run the same command to resume)")


LOGS_LISTED = 3


def log_lines(submission: Submission) -> list[str]:
    """Where each task's stdout and stderr go, as submitit names them (a folder per task on SLURM, flat files named
    by each local process's id): the first few shards, then how many more."""
    lines = []
    for shard, job in list(zip(submission.shards, submission.jobs))[:LOGS_LISTED]:
        label = "logs:" if not lines else ""
        lines.append(f"{label:<9} shard {shard}: {job.paths.stdout} (stderr: {job.paths.stderr.name})")
    if len(submission.jobs) > LOGS_LISTED:
        lines.append(f"{'':<9} ... and {len(submission.jobs) - LOGS_LISTED} more shard(s) beside them")
    return lines


def wait_and_report(submission: Submission) -> int:
    failures = wait(submission)
    folder = RunFolder(submission.run_dir)
    status = run_status(folder)
    print(as_table(status))
    hint = gave_up_hint(status, status_command(folder.path))
    if hint:
        print(hint, file=sys.stderr)
    for line in failures:
        print(f"task failed: {line}", file=sys.stderr)
    return 1 if failures or any(row.done < row.items for row in status.shards) else 0


def cluster_for_resubmit(manifest_cluster: dict[str, Any], config: dict[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """The run's own resources, except what this command line sets: `cluster=<name>` takes that whole group,
    `cluster.<key>=...` that key."""
    keys = [arg.split("=", 1)[0].lstrip("+~") for arg in argv]
    if "cluster" in keys:
        return config["cluster"]
    cluster = json.loads(json.dumps(manifest_cluster))
    for key in keys:
        if not key.startswith("cluster."):
            continue
        path = key.split(".")[1:]
        source, target = config["cluster"], cluster
        for part in path[:-1]:
            source, target = source[part], target.setdefault(part, {})
        target[path[-1]] = source[path[-1]]
    return cluster


@guarded
def status_main(argv: Sequence[str]) -> int:
    config = load_config(argv, strict=False)  # only reads a run: model paths the stage config leaves open do not matter
    folder = RunFolder(config["out_dir"])
    manifest = folder.manifest()
    if config["errors"]:
        records = failures(folder)
        print(json.dumps([record.__dict__ for record in records], indent=1) if config["output"] == "json"
              else failures_as_text(records))
        return 0
    if config["by"] == "group":
        groups = group_statuses(folder)
        print(json.dumps(groups_as_json(groups), indent=1) if config["output"] == "json" else groups_as_table(groups))
        published = published_report(argv, folder.path) if config["output"] != "json" else None
        if published:
            print(f"published ({config['merged_dir']}):\n{published}")
        return 0
    if config["by"] != "shard":
        raise ConfigError(f"by={config['by']!r}: use by=shard (per shard, the default) or by=group (per item group)")
    status = run_status(folder)
    print(json.dumps(as_json(status), indent=1) if config["output"] == "json" else as_table(status))
    retry = bool(config["retry_failed"])
    hint = gave_up_hint(status, status_command(folder.path))
    if hint and not (config["resubmit"] and retry):
        print(hint, file=sys.stderr)
    if not config["resubmit"]:
        return 0
    incomplete = status.left(retry)
    if not incomplete:
        print("nothing to resubmit: " + ("every shard is complete" if not hint else "every item left has given up "
                                          "(see above: add retry_failed=true)"))
        return 0
    run_config = {**manifest.config, "cluster": cluster_for_resubmit(manifest.config["cluster"], config, argv)}
    manifest.config = run_config  # what this array asks for is the run's from now on
    if retry:
        import time

        manifest.attempts_since = time.time()
    launch = Launch(run_config, folder, manifest, resolve_backend(run_config["cluster"]))
    if launch.backend == "slurm":
        preflight(run_config, len(incomplete))
    with folder.lock():
        submission = submit(launch, incomplete)
        describe_submission(submission, config)
        if submission.backend != "slurm":
            return interruptible(submission, lambda: wait_and_report(submission))
    return interruptible(submission, lambda: wait_and_report(submission)) if config["wait"] else 0
