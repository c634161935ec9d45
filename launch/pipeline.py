"""Launch a chain of stages: `python launch/pipeline.py pipeline=vipe_tapip3d_wilor dataset=video dataset.root=...`.

`conf/pipeline/<name>.yaml` lists the stages in order; each later stage reads the earlier ones' outputs through its
`depends_on`. Overrides apply to every stage (dataset, shards, cluster); `<stage>:key=value` to that stage only, e.g.
`external_tapip3d:stage.gpu.max_workers=2`. Every stage is prepared (all checks, manifests written) before anything is submitted; on SLURM each
stage is then one array job that starts once the previous array succeeded (`afterok`), so the whole chain is queued
by one command. Locally the stages run one after the other. Re-running the command resumes every stage.
"""

from __future__ import annotations

from collections.abc import Sequence

from shardprep.launch.cli import _describe, _finish, guarded
from shardprep.runtime.config import load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.run import prepare, submit


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
        target, colon, override = arg.partition(":")
        if colon and ":" not in arg.split("=", 1)[0][len(target) + 1:] and "=" not in target:
            if target not in own:
                raise ConfigError(f"{arg}: {target!r} is not a stage of this pipeline ({', '.join(stages)})")
            own[target].append(override)
    prepared = []
    for stage in stages:
        config = load_config([*common, f"stage={stage}", *own[stage]])
        prepared.append((config, *prepare(config)))
    code, previous = 0, None
    for config, run_dir, manifest in prepared:
        submission = submit(config, run_dir, manifest, after=previous)
        _describe(submission, config)
        if submission.backend != "slurm":
            code = _finish(submission) or code
        previous = submission.job_id
    if prepared[-1][0]["wait"] and submission.backend == "slurm":
        code = _finish(submission) or code
    return code


if __name__ == "__main__":
    main()
