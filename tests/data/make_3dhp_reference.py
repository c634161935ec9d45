"""Make tests/data/3dhp_reference/ once: MMPose's own 3DHP converter run on the tiny raw set of raw_3dhp.py.

    PYTHONPATH=<worktree parent> python tests/data/make_3dhp_reference.py <mmpose checkout> <scratch folder>

MMPose's `tools/dataset_converters/preprocess_mpi_inf_3dhp.py` is imported from the checkout and its two functions
`load_trainset` / `load_testset` are called as its `__main__` calls them, with two of its known problems worked
around in its own module namespace (no library is patched): its hard-coded subject lists and full-release frame
counts are set to the tiny set's (S1 Seq1, TS1 and TS5; 4 and 6 frames), and the name `mmcv` in it is given
`track_iter_progress`, which mmcv 2.x moved to mmengine.utils (with mmcv's own `VideoReader`).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

from raw_3dhp import write_raw_3dhp

HERE = Path(__file__).resolve().parent / "3dhp_reference"


def main(mmpose: Path, scratch: Path) -> None:
    import mmcv
    from mmengine.utils import track_iter_progress

    raw = write_raw_3dhp(scratch / "raw")
    spec = importlib.util.spec_from_file_location("preprocess_mpi_inf_3dhp",
                                                  mmpose / "tools/dataset_converters/preprocess_mpi_inf_3dhp.py")
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    converter.mmcv = SimpleNamespace(VideoReader=mmcv.VideoReader, track_iter_progress=track_iter_progress)
    converter.train_subjects, converter.train_seqs, converter.test_subjects = [1], [1], [1, 5]
    converter.train_frame_nums = {(1, 1): 4}
    converter.test_frame_nums = {1: 6, 5: 6}
    out = scratch / "processed"
    converter.load_trainset(str(raw), str(out))
    converter.load_testset(str(raw), str(out), valid_only=True)
    HERE.mkdir(exist_ok=True)
    for name in ("mpi_inf_3dhp_train.npz", "mpi_inf_3dhp_test_valid.npz", "cameras_train.pkl", "cameras_test.pkl"):
        shutil.copyfile(out / "annotations" / name, HERE / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
