"""Stage 1, raw datasets to MMPose-format files: `python launch/convert.py dataset=h36m raw_root=/data/h36m_raw
shards=20` (one SLURM array, one item per video; re-run to resume), then `python launch/merge.py dataset=h36m
stage=convert` writes the converter's layout under `merged_dir`.

`dataset=<name>` picks the raw form of that dataset (`conf/dataset/raw_<name>.yaml`) and `raw_root=` is its
`dataset.root`; tasks ask for no GPU (`cluster.gpus_per_task=0` unless the command line says otherwise); every other
key is as for any stage launch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from shardprep.launch.cli import EXIT_CONFIG, run_stage
from shardprep.runtime.config import CONF_DIR
from shardprep.runtime.errors import ConfigError

RAW_PREFIX = "raw_"
# Converting decodes videos on CPUs: no GPU asked for unless the command line asks (a later override wins).
CPU_ONLY = ("cluster.gpus_per_task=0",)


def raw_datasets() -> list[str]:
    return sorted(path.stem[len(RAW_PREFIX):] for path in (CONF_DIR / "dataset").glob(f"{RAW_PREFIX}*.yaml"))


def raw_arguments(argv: Sequence[str]) -> list[str]:
    """The stage launch's command line: `dataset=h36m` as `dataset=raw_h36m`, `raw_root=P` as `dataset.root=P`."""
    translated, named = [], False
    for arg in argv:
        key, equals, value = arg.partition("=")
        if key.lstrip("+") == "dataset" and equals:
            name = value[len(RAW_PREFIX):] if value.startswith(RAW_PREFIX) else value
            if name not in raw_datasets():
                raise ConfigError(f"dataset={value}: no raw form of it to convert; convertible: "
                                  f"{', '.join(raw_datasets())} (nothing was submitted)")
            translated.append(f"dataset={RAW_PREFIX}{name}")
            named = True
        elif key == "raw_root" and equals:
            translated.append(f"dataset.root={value}")
        else:
            translated.append(arg)
    if not named and not any(arg.startswith("-") for arg in argv):
        raise ConfigError(f"name the dataset to convert: dataset=<{'|'.join(raw_datasets())}> raw_root=<its folder> "
                          "(nothing was submitted)")
    return translated


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        translated = raw_arguments(args)
    except ConfigError as error:
        print(f"shardprep: error: {error}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    run_stage("convert")([*CPU_ONLY, *translated])


if __name__ == "__main__":
    main()
