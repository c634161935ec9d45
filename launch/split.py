"""Train/test files by subject from a merged run: `python launch/split.py dataset=fit3d [stage=depth]`.

Subject lists come from `dataset.subjects`; every array of the merged file(s) and the `_dets.npy` twin is masked
alike (merge/split.py, docs/merge.md).
"""

from collections.abc import Sequence
from pathlib import Path

from shardprep.launch.cli import guarded
from shardprep.merge.folder import merging
from shardprep.merge.job import load_merge
from shardprep.merge.split import split_run
from shardprep.runtime.npz import npz_headers


def run_split(argv: Sequence[str]) -> tuple[list[Path], int]:
    """Write the subsets into the run's merged folder (as its one writer); their paths, and the rows left out."""
    _, job = load_merge(argv)
    with merging(job.out_dir, job.manifest.fingerprint) as written:
        subsets, left_out = split_run(job)
        written.extend(subsets)
    return written, left_out


def report_split(written: Sequence[Path], left_out: int) -> None:
    for path in written:
        rows = f" ({npz_headers(path)['imgname'][0][0]} rows)" if path.suffix == ".npz" else ""
        print(f"split: {path}{rows}")
    if left_out:
        print(f"{left_out} rows belong to no subject list and were left out")


class SplitTask:
    """The split as a submitit job (launch/pipeline.py queues it behind the merge): the same command line."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)

    def __call__(self) -> list[str]:
        written, left_out = run_split(self.argv)
        report_split(written, left_out)
        return [str(path) for path in written]


@guarded
def main(argv: Sequence[str]) -> int:
    report_split(*run_split(argv))
    return 0


if __name__ == "__main__":
    main()
