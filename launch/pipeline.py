"""Launch a chain of stages: `python launch/pipeline.py pipeline=vipe_tapip3d_wilor dataset=video dataset.root=...`.

`conf/pipeline/<name>.yaml` lists the stages in order; each later stage reads the earlier ones' outputs through its
`depends_on`. Overrides apply to every stage (dataset, shards, cluster); `<stage>:key=value` to that stage only, e.g.
`external_tapip3d:stage.gpu.max_workers=2`. Every stage is prepared (all checks, manifests written) before anything is submitted; on SLURM each
stage is then one array job that starts once the previous array succeeded (`afterok`), so the whole chain is queued
by one command. Locally the stages run one after the other. `merge_after=true` adds the last stage's merge
(conf/merge/<last stage>.yaml), after the chain. Re-running the command resumes every stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from shardprep.launch.cli import describe_submission, wait_and_report, guarded
from shardprep.launch.merge_after import MergeAfter
from shardprep.runtime.config import load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.run import Submission, prepare, submit


@guarded
def main(argv: Sequence[str]) -> int:
    chosen = [arg for arg in argv if arg.lstrip("+").startswith("pipeline=")]
    if len(chosen) != 1:
        raise ConfigError("name one pipeline: pipeline=<name of a file in conf/pipeline/>")
    common = [arg for arg in argv if arg not in chosen and ":" not in arg.split("=", 1)[0]]
    pipeline = load_config(common, defaults=[f"+{chosen[0].lstrip('+')}"])["pipeline"]
    stages = list(pipeline.get("stages") or [])
    if not stages:
        raise ConfigError(f"{chosen[0]}: the pipeline lists no stages (stages: [first, second, ...])")
    own: dict[str, list[str]] = {stage: [] for stage in stages}
    for arg in argv:
        if ":" in arg.split("=", 1)[0]:
            target, _, override = arg.partition(":")
            if target not in own:
                raise ConfigError(f"{arg}: {target!r} is not a stage of this pipeline ({', '.join(stages)})")
            own[target].append(override)
    prepared = []
    for stage in stages:
        overrides = [*common, f"stage={stage}", *own[stage]]
        config = load_config(overrides)
        prepared.append((config, *prepare(config)))
    last_config, last_dir, _ = prepared[-1]
    merge = MergeAfter(last_config, [*common, f"stage={stages[-1]}", *own[stages[-1]]], last_dir) \
        if last_config.get("merge_after") else None

    code, previous, submitted = 0, None, []
    for index, (config, run_dir, manifest) in enumerate(prepared):
        submission = submit(config, run_dir, manifest, after=previous)
        describe_submission(submission, config)
        previous = submission.job_id
        submitted.append((submission, config))
        last = index == len(prepared) - 1
        if submission.backend == "slurm" and not last:
            continue  # on SLURM the whole chain is queued first, then waited for; locally each stage ends first
        finish = partial(_finish_all, submitted)
        submitted = []
        code = max(code, merge(submission, finish) if last and merge else finish())
    return code


def _finish_all(submitted: list[tuple[Submission, dict[str, Any]]]) -> int:
    """Wait for each submitted stage where the launch waits, print its table; the worst exit code."""
    return max([wait_and_report(submission) if submission.backend != "slurm" or config["wait"] else 0
                for submission, config in submitted])

if __name__ == "__main__":
    main()
