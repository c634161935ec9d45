"""The convert stage on a tiny raw MPI-INF-3DHP written the way the release is (tests/data/raw_3dhp.py: annot.mat v5,
annot_data.mat v7.3, camera.calibration, avi videos, test JPEGs): annotation arrays and camera files equal to what
MMPose's own converter wrote for the same raw set (tests/data/3dhp_reference, README there); a corrupt .mat is a
recorded item error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import launch
from data.raw_3dhp import write_raw_3dhp
from data.raw_h36m import grey
from shardprep.datasets.safe_pickle import load_arrays_pickle

REFERENCE = Path(__file__).resolve().parent / "data" / "3dhp_reference"
SUBSET = ("dataset.subjects.train=[S1]", "dataset.subjects.test=[TS1,TS5]", "dataset.sequences=[1]")


def convert(raw: Path, run: Path, *extra: str, check: bool = True):
    return launch("convert.py", "dataset=3dhp", f"raw_root={raw}", f"out_dir={run}", "cluster=local", *SUBSET,
                  *extra, check=check)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("convert_3dhp")
    raw = write_raw_3dhp(base / "raw")
    convert(raw, base / "run", "shards=2")
    launch("merge.py", "dataset=3dhp", "stage=convert", f"out_dir={base / 'run'}", f"merged_dir={base / '3dhp'}")
    return base / "3dhp"


@pytest.mark.parametrize("name", ["mpi_inf_3dhp_train.npz", "mpi_inf_3dhp_test_valid.npz"])
def test_annotations_equal_mmpose_converter(converted: Path, name: str) -> None:
    ours = np.load(converted / "annotations" / name, allow_pickle=False)
    reference = np.load(REFERENCE / name, allow_pickle=False)
    assert sorted(ours.files) == sorted(reference.files) == ["S", "center", "imgname", "part", "scale"]
    for key in reference.files:
        assert ours[key].dtype == reference[key].dtype, key
        np.testing.assert_array_equal(ours[key], reference[key], err_msg=key)
    assert 0 < reference["part"][..., 2].mean() < 1  # some joints invisible: the rule is exercised


@pytest.mark.parametrize("name", ["cameras_train.pkl", "cameras_test.pkl"])
def test_cameras_equal_mmpose_converter(converted: Path, name: str) -> None:
    ours = load_arrays_pickle(converted / "annotations" / name)
    reference = load_arrays_pickle(REFERENCE / name)
    assert list(ours) == list(reference)
    for key, camera in reference.items():
        assert sorted(ours[key]) == sorted(camera)
        for field, value in camera.items():
            np.testing.assert_array_equal(ours[key][field], value, err_msg=f"{key} {field}")


def test_frames_flat_and_valid_only(converted: Path) -> None:
    names = sorted(path.name for path in (converted / "images").iterdir())
    assert names[:4] == ["S1_Seq1_Cam0_000001.jpg", "S1_Seq1_Cam0_000002.jpg", "S1_Seq1_Cam0_000003.jpg",
                         "S1_Seq1_Cam0_000004.jpg"]
    assert [n for n in names if n.startswith("TS1_")] == ["TS1_000001.jpg", "TS1_000003.jpg", "TS1_000004.jpg",
                                                          "TS1_000006.jpg"]
    for name in ("S1_Seq1_Cam4_000003.jpg", "TS5_000004.jpg"):
        pixels = np.asarray(Image.open(converted / "images" / name).convert("RGB"), dtype=np.float64)
        assert abs(pixels.mean() - grey(int(name[-10:-4]) - 1)) < 3, name


def test_corrupt_mat_is_an_item_error(tmp_path: Path) -> None:
    raw = write_raw_3dhp(tmp_path / "raw")
    (raw / "test" / "TS5" / "annot_data.mat").write_bytes(b"MATLAB 7.3 MAT-file" + b"\x00" * 600)
    done = convert(raw, tmp_path / "run", "max_attempts=1", check=False)
    assert done.returncode == 1
    errors = json.loads(launch("status.py", "dataset=3dhp", "stage=convert", f"out_dir={tmp_path / 'run'}",
                               "errors=true", "output=json").stdout)
    assert [record["item"] for record in errors] == ["TS5"]
    assert str(raw / "test" / "TS5" / "annot_data.mat") in errors[0]["error"]


def test_depth_launch_reads_the_converted_root(converted: Path, tmp_path: Path) -> None:
    done = launch("depth.py", "dataset=3dhp", f"dataset.root={converted}", "stage=depth_demo", "cluster=local",
                  "dry_run=true", f"out_dir={tmp_path / 'depth'}")
    assert "40 items" in done.stdout  # 8 cameras x 4 frames + 2 test subjects x 4 valid frames


def shard_frames(stdout: str) -> list[int]:
    return [int(line.split()[2]) for line in stdout.splitlines() if line[:1].isdigit() and len(line.split()) == 3]


def test_shards_balance_frames_and_a_recorded_plan_is_kept(tmp_path: Path) -> None:
    """Train videos of 9 frames, test subjects of 4 valid: balanced by item count the 3 shards would hold 17, 27 and
    36 frames. A run folder planned otherwise (by an earlier planner: here its manifest's plan rewritten and the
    checkpoints moved to match) resumes on its recorded plan, redoing nothing."""
    raw = write_raw_3dhp(tmp_path / "raw", train_frames=9)
    planned = shard_frames(convert(raw, tmp_path / "dry", "shards=3", "dry_run=true").stdout)
    assert sum(planned) == 8 * 9 + 2 * 4 and max(planned) - min(planned) <= 9, planned
    run = tmp_path / "run"
    convert(raw, run, "shards=3")
    manifest_path = run / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    by_count = [[0, 3], [3, 6], [6, 10]]
    assert manifest["plan"] != by_count
    ids = ["TS1", "TS5", *(f"S1_Seq1_Cam{c}" for c in (0, 1, 2, 4, 5, 6, 7, 8))]
    checkpoints = run / "checkpoints"
    for shard, (start, end) in enumerate(by_count):
        (checkpoints / f"shard-{shard:05d}").mkdir(exist_ok=True)
        for item in ids[start:end]:
            for path in checkpoints.glob(f"shard-*/{item}.*"):
                path.rename(checkpoints / f"shard-{shard:05d}" / path.name)
    manifest["plan"] = by_count
    manifest_path.write_text(json.dumps(manifest))
    convert(raw, run, "shards=3")
    assert json.loads(manifest_path.read_text())["plan"] == by_count
    status = json.loads(launch("status.py", "dataset=3dhp", "stage=convert", f"out_dir={run}", "output=json").stdout)
    assert [(shard["items"], shard["done"]) for shard in status["shards"]] == [(3, 3), (3, 3), (4, 4)], status
    for shard in range(3):
        progress = json.loads((run / "progress" / f"shard-{shard:05d}.json").read_text())
        assert progress["attempts"][-1]["processed"] == 0, progress
