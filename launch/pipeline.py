"""Launch a chain of stages: `python launch/pipeline.py pipeline=vipe_tapip3d_wilor dataset=video dataset.root=...`.

`conf/pipeline/<name>.yaml` lists the stages in order; each later stage reads the earlier ones' outputs through its
`depends_on`. Overrides apply to every stage (dataset, shards, cluster); `<stage>:key=value` to that stage only, e.g.
`external_tapip3d:stage.gpu.max_workers=2`. Every stage is prepared (all checks; a later stage checks against the
earlier stages' planned manifests) before anything is submitted; on SLURM each stage is then one array job that starts
once the previous array succeeded (`afterok`), so the whole chain is queued by one command. Locally the stages run one after the other. `merge_after=true` adds the last stage's merge
(conf/merge/<last stage>.yaml), after the chain. Re-running the command resumes every stage.

A pipeline with `from_raw: true` (conf/pipeline/depth_from_raw.yaml) starts from a raw dataset instead: convert, its
merge, then its one stage on the converted files, that stage's merge and the split (launch/raw_chain.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from functools import partial

from shardprep.launch.cli import describe_submission, finish_slurm, guarded, interruptible, wait_and_report
from shardprep.launch.merge_after import MergeAfter
from shardprep.launch.raw_chain import CONVERT, RAW_ROOT, chain_from
from shardprep.launch.raw_chain import run as run_raw_chain
from shardprep.runtime.config import load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.run import Launch, prepare, submit
from shardprep.runtime.run_folder import planned_runs


@guarded
def main(argv: Sequence[str]) -> int:
    chosen = [arg for arg in argv if arg.lstrip("+").startswith("pipeline=")]
    if len(chosen) != 1:
        raise ConfigError("name one pipeline: pipeline=<name of a file in conf/pipeline/>")
    # `pipeline.<key>=...` sets the pipeline's own keys (pipeline.stages=[depth_demo]); `<stage>:key=...` one stage's
    own_keys = [arg for arg in argv if arg.lstrip("+~").startswith("pipeline.")]
    common = [arg for arg in argv if arg not in chosen and arg not in own_keys and ":" not in arg.split("=", 1)[0]]
    # raw_root= is no config key: the convert step's launcher makes it its dataset.root (launch/convert.py)
    keys = [arg for arg in [*common, *own_keys] if not arg.startswith(f"{RAW_ROOT}=")]
    pipeline = load_config(keys, defaults=[f"+{chosen[0].lstrip('+')}"])["pipeline"]
    stages = list(pipeline.get("stages") or [])
    if not stages:
        raise ConfigError(f"{chosen[0]}: the pipeline lists no stages (stages: [first, second, ...])")
    from_raw = bool(pipeline.get("from_raw"))
    own: dict[str, list[str]] = {stage: [] for stage in ([CONVERT, *stages] if from_raw else stages)}
    for arg in argv:
        if ":" in arg.split("=", 1)[0]:
            target, _, override = arg.partition(":")
            if target not in own:
                raise ConfigError(f"{arg}: {target!r} is not a stage of this pipeline ({', '.join(own)})")
            own[target].append(override)
    if from_raw:
        return run_raw_chain(chain_from(pipeline, common, own))
    prepared: list[Launch] = []
    for stage in stages:
        config = load_config([*common, f"stage={stage}", *own[stage]])
        with planned_runs({launch.folder.path: launch.manifest for launch in prepared}):
            prepared.append(prepare(config))
    last = prepared[-1]
    merge = None
    if last.config.get("merge_after"):
        with planned_runs({launch.folder.path: launch.manifest for launch in prepared}):
            merge = MergeAfter(last.config, [*common, f"stage={stages[-1]}", *own[stages[-1]]], last.folder.path)

    previous, queued = None, []
    with ExitStack() as locks:
        for launch in prepared:
            locks.enter_context(launch.folder.lock())
            submission = submit(launch, after=previous)
            describe_submission(submission, launch.config)
            previous = submission.job_id
            if submission.backend != "slurm":  # locally each stage ends before the next starts
                code = interruptible(submission, partial(wait_and_report, submission))
                if code:
                    return code
            queued.append((submission, launch.config))
        if submission.backend != "slurm":
            if merge is not None:
                merge.run_here()
            return 0
        merge_job = merge.submit(submission.job_id) if merge else None
    code = max(interruptible(s, partial(finish_slurm, s, config, None, None)) for s, config in queued)
    if merge is not None and last.config["wait"]:
        code = merge.wait(merge_job) or code
    return code


if __name__ == "__main__":
    main()
