"""Training files from a finished run: `python launch/merge.py dataset=h36m [stage=depth] [format=xycd|hdf5]
[workers=16] [allow_partial=true]`. The run's stage picks the merge (conf/merge/<stage>.yaml, docs/merge.md)."""

from collections.abc import Sequence

from shardprep.launch.cli import guarded
from shardprep.merge.job import run_merge


@guarded
def main(argv: Sequence[str]) -> int:
    for path in run_merge(argv):
        print(f"merged: {path}")
    return 0


if __name__ == "__main__":
    main()
