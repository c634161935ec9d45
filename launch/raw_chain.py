"""A raw dataset to split training files, queued by one command (`conf/pipeline/depth_from_raw.yaml`):

    python launch/pipeline.py pipeline=depth_from_raw dataset=h36m raw_root=/data/h36m_raw shards=20

convert array -> convert merge -> prepare job -> depth array -> depth merge -> split, each on SLURM `afterok` on the
one before. The depth stage reads the convert merge's folder (`dataset.root=<convert merged_dir>`), whose files exist
only once that merge ran, so its run cannot be planned at launch: everything of it that does not need those files
(config, models, cluster request, out_dir) is checked before anything is submitted, and the rest (items, manifest,
submission of its array, merge and split) is done by a small job queued behind the convert merge, the prepare job.
Locally (`cluster=local`/`debug`) the steps run one after the other in this process.

Re-running the command resumes: a stage whose shards are all done submits no array, a merge that finished for the
run's fingerprint is not redone (unless its array ran again), the split runs after its merge or where a file of it is
missing; a chain with a job still queued or running is refused, naming it. Stages know nothing of this: it is only
the order of launches that `launch/pipeline.py` would make by hand.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from shardprep.launch.cli import EXIT_INTERRUPTED, describe_submission, interruptible, wait_and_report
from shardprep.launch.convert import CPU_ONLY, raw_arguments
from shardprep.launch.merge_after import MergeAfter, submit_after, wait_job
from shardprep.launch.split import SplitTask, report_split, run_split
from shardprep.merge.folder import finished_fingerprint
from shardprep.merge.rows import merged_stem
from shardprep.runtime.config import CONF_DIR, load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.run import QUEUE_EXIT_TIMEOUT_S, Launch, Submission, check_settings, prepare, submit
from shardprep.runtime.run_folder import RunFolder, planned_runs
from shardprep.runtime.scheduler import queued_tasks, wait_until_unqueued
from shardprep.runtime.status import run_status, status_command

CONVERT = "convert"
RAW_ROOT = "raw_root"


@dataclass
class RawChain:
    """The chain's command line, split by where each part goes."""

    stage: str  # the stage run on the converted files (depth)
    common: list[str]  # every stage's: dataset=, shards=, cluster...
    raw: list[str]  # raw_root=...: the convert stage's dataset.root
    own: dict[str, list[str]] = field(default_factory=dict)  # `<stage>:key=value`, per stage

    def convert_argv(self) -> list[str]:
        return [*CPU_ONLY, *raw_arguments([*self.common, *self.raw]), f"stage={CONVERT}", *self.own.get(CONVERT, [])]

    def stage_argv(self, converted: Path) -> list[str]:
        return [*self.common, f"stage={self.stage}", *self.own.get(self.stage, []), f"dataset.root={converted}"]


@dataclass
class Queued:
    """What a step queued on SLURM, for the launcher to print and (wait=true) wait for."""

    kind: str
    job: submitit.Job
    submission: Submission | None = None  # an array's


def chain_from(pipeline: dict[str, Any], common: Sequence[str], own: dict[str, list[str]]) -> RawChain:
    stages = list(pipeline.get("stages") or [])
    if len(stages) != 1:
        raise ConfigError(f"a pipeline from raw files runs one stage on the converted files (stages: [depth]), "
                          f"not {stages}")
    for arg in common:
        if arg.split("=", 1)[0].lstrip("+") in ("dataset.root", "out_dir", "merged_dir"):
            raise ConfigError(f"{arg}: each step has its own; give the raw folder as raw_root=, a step's folders as "
                              f"{CONVERT}:{arg} or {stages[0]}:{arg}")
    raw = [arg for arg in common if arg.startswith(f"{RAW_ROOT}=")]
    return RawChain(stages[0], [arg for arg in common if arg not in raw], raw, own)


def run(chain: RawChain) -> int:
    """Check both stages, then run (local) or queue (SLURM) the chain."""
    convert_config = load_config(chain.convert_argv())
    convert = prepare(convert_config)
    for note in convert.notes:
        print(note, file=sys.stderr)
    converted = Path(convert_config["merged_dir"]).expanduser().resolve()
    stage_config = load_config(chain.stage_argv(converted))
    check_later_stage(stage_config, convert)
    with planned_runs({convert.folder.path: convert.manifest}):
        convert_merge = MergeAfter(convert_config, chain.convert_argv(), convert.folder.path)
    stage_folder = RunFolder(stage_config["out_dir"])
    refuse_live(convert.folder, stage_folder)
    todo = shards_left(convert)
    merge_needed = bool(todo) or finished_fingerprint(converted) != convert.manifest.fingerprint
    if not todo:
        print(f"{CONVERT}: every shard of {convert.folder.path} is done, no array submitted")
    if not merge_needed:
        print(f"{CONVERT} merge: {converted} holds this run's merge, not redone")
    if convert.backend != "slurm":
        with convert.folder.lock():
            if todo:
                submission = submit(convert, todo)
                describe_submission(submission, convert_config)
                code = interruptible(submission, lambda: wait_and_report(submission))
                if code:
                    return code
            if merge_needed:
                convert_merge.run_here()
        try:
            continue_on_converted(chain, converted)
        except StepFailed as failed:
            return failed.code
        return 0
    queued = []
    with convert.folder.lock():
        after = None
        if todo:
            submission = submit(convert, todo)
            describe_submission(submission, convert_config)
            queued.append(Queued("array", submission.jobs[0], submission))
            after = submission.job_id
        if merge_needed:
            merge_job = convert_merge.submit(after)
            queued.append(Queued("merge", merge_job))
    if merge_needed:
        job = submit_after(stage_config, stage_folder.path, "prepare", ContinueOnConverted(chain, converted),
                           merge_job.job_id, f"prepares the {chain.stage} run on {converted} and queues its array, "
                           "merge and split")
        queued.append(Queued("prepare", job))
        print(f"watch: squeue -j {','.join(q.submission.job_id if q.submission else q.job.job_id for q in queued)}"
              f"; {status_command(convert.folder.path)}; once the prepare job ran: python launch/status.py "
              f"dataset={stage_config['dataset']['name']} stage={chain.stage} out_dir={stage_folder.path}")
    else:  # the converted files are there: the prepare job's work is done here, its errors said at once
        queued.extend(continue_on_converted(chain, converted))
    if not stage_config["wait"]:
        return 0
    try:
        return wait_for(queued)
    except KeyboardInterrupt:
        jobs = " ".join(q.submission.job_id if q.submission else q.job.job_id for q in queued)
        print(f"\ninterrupted: the chain keeps running on SLURM (it does not need this command); stop it with "
              f"scancel {jobs} (the same command again names every job still queued)", file=sys.stderr)
        return EXIT_INTERRUPTED


def check_later_stage(config: dict[str, Any], convert: Launch) -> None:
    """Everything of the stage on the converted files that its files are not needed for, and its merge and split."""
    check_settings(config)
    if RunFolder(config["out_dir"]).path == convert.folder.path:
        raise ConfigError(f"the {CONVERT} and {config['stage']['name']} steps both write into {convert.folder.path}: "
                          f"give them their own out_dir ({CONVERT}:out_dir=..., {config['stage']['name']}:out_dir=...)")
    stage = config["stage"]["name"]
    if not (CONF_DIR / "merge" / f"{stage}.yaml").is_file():
        raise ConfigError(f"stage {stage!r} has no merge (conf/merge/{stage}.yaml): the chain's merge and split need one")
    if not config["dataset"].get("subjects"):
        raise ConfigError(f"dataset {config['dataset']['name']!r} has no subject lists for the split: set "
                          "dataset.subjects, e.g. '+dataset.subjects={train:[S1,S5],test:[S9]}'")


def refuse_live(*folders: RunFolder) -> None:
    """A chain with a job of any step (array, merge, prepare, split) still queued or running is not queued twice."""
    jobs = [entry["job_id"] for folder in folders for entry in folder.submissions() if entry["backend"] == "slurm"]
    queued = queued_tasks(jobs)
    live = sorted({task.split("_")[0] for task in queued}, key=int)
    if live:
        states = ", ".join(f"{task} {state.lower()}" for task, state in sorted(queued.items()))
        raise ConfigError(f"the chain is under way: job(s) {' '.join(live)} still in SLURM's queue ({states}); wait "
                          f"for them (squeue -j {','.join(live)}) or stop the chain (scancel {' '.join(live)}), then "
                          "run this command again")


def shards_left(launch: Launch) -> list[int]:
    """The shards with items still to do under the planned manifest (every shard of a new run)."""
    if not launch.folder.manifest_path.is_file():
        return list(range(launch.manifest.shards))
    with planned_runs({launch.folder.path: launch.manifest}):
        return run_status(launch.folder).left(bool(launch.config["retry_failed"]))


class ContinueOnConverted:
    """The prepare job: plan the stage's run on the converted files, and queue its array, merge and split."""

    def __init__(self, chain: RawChain, converted: Path) -> None:
        self.chain, self.converted = chain, converted

    def __call__(self) -> list[Queued]:
        return continue_on_converted(self.chain, self.converted)


def continue_on_converted(chain: RawChain, converted: Path) -> list[Queued]:
    """Prepare the stage on the converted files; locally run its array, merge and split here (an empty list back),
    on SLURM queue them, each afterok on the one before. Steps done already are not redone."""
    argv = chain.stage_argv(converted)
    launch = prepare(load_config(argv))
    for note in launch.notes:
        print(note, file=sys.stderr)
    with planned_runs({launch.folder.path: launch.manifest}):
        merge = MergeAfter(launch.config, argv, launch.folder.path)
    todo = shards_left(launch)
    merge_needed = bool(todo) or finished_fingerprint(merge.merged_dir) != launch.manifest.fingerprint
    name = chain.stage
    if not todo:
        print(f"{name}: every shard of {launch.folder.path} is done, no array submitted")
    local = launch.backend != "slurm"
    queued: list[Queued] = []
    with launch.folder.lock():
        submission = submit(launch, todo) if todo else None
        if submission is not None:
            describe_submission(submission, launch.config)
            if local:
                code = interruptible(submission, lambda: wait_and_report(submission))
                if code:
                    raise StepFailed(f"{name}: shards failed; see above", code)
            else:
                queued.append(Queued("array", submission.jobs[0], submission))
        if not merge_needed:
            print(f"{name} merge: {merge.merged_dir} holds this run's merge, not redone")
        elif local:
            merge.run_here()
        else:
            queued.append(Queued("merge", merge.submit(submission.job_id if submission else None)))
    if merge_needed and not local:
        queued.append(Queued("split", submit_after(launch.config, launch.folder.path, "split", SplitTask(merge.argv),
                                                   queued[-1].job.job_id, f"splits {merge.merged_dir} by subject")))
    elif merge_needed or not split_done(launch, merge):
        report_split(*run_split(merge.argv))
    else:
        print(f"split: {merge.merged_dir} holds this run's split, not redone")
    return queued


def split_done(launch: Launch, merge: MergeAfter) -> bool:
    """Every subset file of the split is there, from a finished merge of this run."""
    if finished_fingerprint(merge.merged_dir) != launch.manifest.fingerprint:
        return False
    prefix, dataset = merge.job.config["merge"].get("prefix", ""), launch.config["dataset"]
    return all((merge.merged_dir / f"{merged_stem(dataset['name'], prefix, subset)}.npz").is_file()
               for subset in dataset["subjects"])


class StepFailed(Exception):
    """A local step failed after saying why; the chain stops with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def wait_for(queued: Sequence[Queued]) -> int:
    """wait=true: every queued step in order; a prepare job's own steps once it answered."""
    code = 0
    for step in queued:
        if step.submission is not None:
            code = wait_and_report(step.submission) or code
            continue
        failed, result = wait_job(step.job, step.kind)
        wait_until_unqueued([step.job.job_id], QUEUE_EXIT_TIMEOUT_S)  # answered, but maybe still listed: a re-run
        code = failed or code                                            # right after would be refused
        if step.kind == "prepare" and not failed:
            code = wait_for(result) or code
        elif step.kind in ("merge", "split") and not failed:
            for path in result:
                print(f"{'merged' if step.kind == 'merge' else 'split'}: {path}")
    return code
