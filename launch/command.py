"""The `shardprep` console script: `shardprep depth dataset=h36m shards=20`, `shardprep status ...`, `shardprep merge ...`.

One name per script in launch/ (`shardprep <name> ...` is `python launch/<name>.py ...`); each command keeps its
Hydra flags (`shardprep depth --help`, `shardprep status --cfg job`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from shardprep.launch.cli import EXIT_CONFIG, run_stage, status_main

USAGE = "usage: shardprep <command> [group=option ...] [key=value ...] [--help | --cfg job | --info]"


def commands() -> dict[str, tuple[str, Callable[[Sequence[str] | None], None]]]:
    """What each command does, and its entry; the merge, split and pipeline modules are imported only when used."""

    def later(module: str) -> Callable[[Sequence[str] | None], None]:
        def entry(argv: Sequence[str] | None = None) -> None:
            from importlib import import_module

            import_module(f"shardprep.launch.{module}").main(argv)

        return entry

    return {
        "convert": ("raw datasets to MMPose-format annotations and frames", later("convert")),
        "depth": ("run the depth stage (detector, pose, depth model)", run_stage("depth")),
        "events": ("run the DSEC events stage", run_stage("events")),
        "run": ("run any stage: stage=<name>", run_stage(None)),
        "pipeline": ("run a chain of stages: pipeline=<name>", later("pipeline")),
        "status": ("per-shard progress of a run; resubmit=true", status_main),
        "merge": ("training files from a finished run", later("merge")),
        "split": ("train/test files by subject from a merged run", later("split")),
        "report": ("an HTML report of a run: shards, progress, failures, previews", later("report")),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    known = commands()
    if not args or args[0] in {"-h", "--help"}:
        listing = "\n".join(f"  {name:<9} {about}" for name, (about, _) in known.items())
        print(f"{USAGE}\n\ncommands:\n{listing}\n\n`shardprep <command> --help` lists its config groups and keys.")
        sys.exit(0 if args else EXIT_CONFIG)
    if args[0] not in known:
        print(f"shardprep: error: {args[0]!r} is not a command; commands: {', '.join(known)}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    sys.argv = [f"shardprep {args[0]}", *args[1:]]
    known[args[0]][1](args[1:])


if __name__ == "__main__":
    main()
