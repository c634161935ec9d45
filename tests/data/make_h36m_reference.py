"""Make tests/data/h36m_reference/ once: MMPose's own converter run on the tiny raw H36M of raw_h36m.py.

    PYTHONPATH=<worktree parent> python tests/data/make_h36m_reference.py <mmpose checkout> <scratch folder>

MMPose's `tools/dataset_converters/preprocess_h36m.py` reads the release's .tgz archives (`<original>/s1/Videos.tgz`
holding `S1/Videos/...`, likewise D2_Positions.tgz and D3_Positions_mono.tgz) and needs spacepy. Its known bug is
worked around by preparing its folders: it writes `annotation_body3d/cameras.pkl` before creating that folder, so
the folder is made first. Its outputs `annotation_body3d/fps10/h36m_{train,test}.npz` and `cameras.pkl` are copied
here (frames are not kept: the tests compare frames against the video itself).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from raw_h36m import CONVERTED, write_raw_h36m

HERE = Path(__file__).resolve().parent / "h36m_reference"


def main(mmpose: Path, scratch: Path) -> None:
    raw = write_raw_h36m(scratch / "raw")
    original = scratch / "original"
    for subject in CONVERTED:
        folder = original / subject.lower()
        folder.mkdir(parents=True, exist_ok=True)
        for archive, member in (("Videos", "Videos"), ("D2_Positions", "MyPoseFeatures/D2_Positions"),
                                ("D3_Positions_mono", "MyPoseFeatures/D3_Positions_mono")):
            with tarfile.open(folder / f"{archive}.tgz", "w:gz") as tar:
                tar.add(raw / subject / member, arcname=f"{subject}/{member}")
    processed = scratch / "processed"
    (processed / "annotation_body3d").mkdir(parents=True, exist_ok=True)  # the converter's bug: see above
    subprocess.run([sys.executable, str(mmpose / "tools/dataset_converters/preprocess_h36m.py"),
                    "--metadata", str(raw / "metadata.xml"), "--original", str(original),
                    "--extracted", str(scratch / "extracted"), "--processed", str(processed)], check=True)
    HERE.mkdir(exist_ok=True)
    for name in ("fps10/h36m_train.npz", "fps10/h36m_test.npz", "cameras.pkl"):
        shutil.copyfile(processed / "annotation_body3d" / name, HERE / Path(name).name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
