"""Train/test files by subject from a merged run: `python launch/split.py dataset=fit3d [stage=depth]`.

Subject lists come from `dataset.subjects`; every array of the merged file(s) and the `_dets.npy` twin is masked
alike (merge/split.py, docs/merge.md).
"""

from collections.abc import Sequence

from shardprep.launch.cli import guarded
from shardprep.merge.folder import merging
from shardprep.merge.job import load_merge
from shardprep.merge.split import split_run
from shardprep.runtime.npz import npz_headers


@guarded
def main(argv: Sequence[str]) -> int:
    _, job = load_merge(argv)
    with merging(job.out_dir, job.manifest.fingerprint) as written:
        subsets, left_out = split_run(job)
        written.extend(subsets)
    for path in written:
        rows = f" ({npz_headers(path)['imgname'][0][0]} rows)" if path.suffix == ".npz" else ""
        print(f"split: {path}{rows}")
    if left_out:
        print(f"{left_out} rows belong to no subject list and were left out")
    return 0


if __name__ == "__main__":
    main()
