"""The convert stage on a tiny raw 3DPW written the way the release is (tests/data/raw_3dpw.py: Python-2 pickles,
imageFiles JPEGs): annotation arrays as the conversion rules give them, computed here by hand from the raw values;
files in the layout the 3DPW adapter reads by default; bad sequence files recorded per sequence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import launch
from data.raw_3dpw import SEQUENCES, write_raw_3dpw
from shardprep.datasets.safe_pickle import load_arrays_pickle

REGRESSOR = "dataset.joint_regressor=regressor.npy"


def convert(raw: Path, run: Path, *extra: str, check: bool = True):
    return launch("convert.py", "dataset=3dpw", f"raw_root={raw}", f"out_dir={run}", "cluster=local", *extra,
                  check=check)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raw_3dpw(tmp_path_factory.mktemp("raw_3dpw") / "raw")


@pytest.fixture(scope="module")
def converted(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("convert_3dpw")
    convert(raw, base / "run", REGRESSOR, "shards=2")
    launch("merge.py", "dataset=3dpw", "stage=convert", f"out_dir={base / 'run'}", f"merged_dir={base / '3dpw'}")
    return base / "3dpw"


def expected_rows(raw: Path, sequence: str) -> list[tuple[str, list[list[float]], list[list[float]]]]:
    """(imgname, 17 x [u, v], 17 x [X, Y, Z]) per row, by hand: regressor rows over the 24 joints, R X + t of the
    frame's camera pose, u = fx X / Z + cx; actor by actor, only frames with campose_valid."""
    split = SEQUENCES[sequence][0]
    content = load_arrays_pickle(raw / "sequenceFiles" / split / f"{sequence}.pkl")
    weights = np.load(raw / "regressor.npy").tolist()
    intrinsics = content["cam_intrinsics"].tolist()
    rows = []
    for actor, (positions, valid) in enumerate(zip(content["jointPositions"], content["campose_valid"])):
        for frame in range(len(positions)):
            if not valid[frame]:
                continue
            smpl = positions[frame].reshape(24, 3).tolist()
            pose = content["cam_poses"][frame].tolist()
            part, points = [], []
            for joint in range(17):
                world = [sum(weights[joint][k] * smpl[k][axis] for k in range(24)) for axis in range(3)]
                camera = [sum(pose[row][axis] * world[axis] for axis in range(3)) + pose[row][3] for row in range(3)]
                part.append([intrinsics[0][0] * camera[0] / camera[2] + intrinsics[0][2],
                             intrinsics[1][1] * camera[1] / camera[2] + intrinsics[1][2]])
                points.append(camera)
            rows.append((f"{sequence}_participant{actor}_frame{frame:05d}.jpg", part, points))
    return rows


@pytest.mark.parametrize("split, sequences", [("train", ["courtyard_arguing_00", "courtyard_drinking_00"]),
                                              ("test", ["downtown_walking_00"])])
def test_annotations_follow_the_rules(raw: Path, converted: Path, split: str, sequences: list[str]) -> None:
    ours = np.load(converted / f"3dpw_{split}.npz", allow_pickle=False)
    assert sorted(ours.files) == ["S", "center", "imgname", "part", "scale"]
    rows = [row for sequence in sequences for row in expected_rows(raw, sequence)]
    assert ours["imgname"].tolist() == [name for name, _, _ in rows]  # train + validation, actor by actor
    assert ours["imgname"].dtype.kind == "U"
    for key, shape in {"center": (2,), "scale": (), "part": (17, 3), "S": (17, 4)}.items():
        assert ours[key].dtype == np.float64 and ours[key].shape == (len(rows), *shape), key
    np.testing.assert_allclose(ours["part"][..., :2], [part for _, part, _ in rows], rtol=1e-12)
    np.testing.assert_allclose(ours["S"][..., :3], [points for _, _, points in rows], rtol=1e-12)
    assert (ours["part"][..., 2] == 1).all() and (ours["S"][..., 3] == 1).all()
    for row, (_, part, _) in enumerate(rows):
        xs, ys = [p[0] for p in part], [p[1] for p in part]
        np.testing.assert_allclose(ours["center"][row], [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2])
        np.testing.assert_allclose(ours["scale"][row], 1.2 * max(max(xs) - min(xs), max(ys) - min(ys)) / 200)


def test_frames_are_the_release_images_the_rows_name(raw: Path, converted: Path) -> None:
    folder = converted / "imageFiles" / "courtyard_arguing_00"
    # Actor 0 lacks frame 1, actor 1 frame 2: every frame is still named by one of them.
    assert sorted(path.name for path in folder.iterdir()) == [f"image_{i:05d}.jpg" for i in range(6)]
    for path in folder.iterdir():
        assert path.read_bytes() == (raw / "imageFiles" / "courtyard_arguing_00" / path.name).read_bytes()
    drinking = converted / "imageFiles" / "courtyard_drinking_00"  # one actor without frame 1: that image is not needed
    assert sorted(path.name for path in drinking.iterdir()) == ["image_00000.jpg", "image_00002.jpg", "image_00003.jpg"]


def test_depth_launch_reads_the_converted_root(converted: Path, tmp_path: Path) -> None:
    done = launch("depth.py", "dataset=3dpw", f"dataset.root={converted}", "stage=depth_demo", "cluster=local",
                  "dry_run=true", f"out_dir={tmp_path / 'depth'}")
    assert "layout=official" in done.stderr and "21 items" in done.stdout  # 10 + 3 train rows, 8 test rows
    launch("run.py", "stage=image_stats", "dataset=3dpw", f"dataset.root={converted}", "cluster=local",
           f"out_dir={tmp_path / 'stats'}")
    assert "merged:" in launch("merge.py", "dataset=3dpw", "stage=image_stats", f"out_dir={tmp_path / 'stats'}").stdout


def test_bad_sequence_files_are_item_errors_and_the_rest_converts(tmp_path: Path) -> None:
    raw = write_raw_3dpw(tmp_path / "raw")
    torn = raw / "sequenceFiles" / "train" / "courtyard_arguing_00.pkl"
    torn.write_bytes(torn.read_bytes()[:300])
    evil = raw / "sequenceFiles" / "validation" / "courtyard_drinking_00.pkl"
    evil.write_bytes(b"\x80\x02cos\nsystem\nU\x04true\x85R.")  # Python 2's pickle of os.system('true')
    run = tmp_path / "run"
    done = convert(raw, run, REGRESSOR, "max_attempts=1", check=False)
    assert done.returncode == 1, done.stderr
    errors = json.loads(launch("status.py", "dataset=3dpw", "stage=convert", f"out_dir={run}", "errors=true",
                               "output=json").stdout)
    by_item = {record["item"]: record["error"] for record in errors}
    assert set(by_item) == {"courtyard_arguing_00", "courtyard_drinking_00"}
    assert str(torn) in by_item["courtyard_arguing_00"] and "not a readable pickle" in by_item["courtyard_arguing_00"]
    assert str(evil) in by_item["courtyard_drinking_00"] and "os.system" in by_item["courtyard_drinking_00"]
    launch("merge.py", "dataset=3dpw", "stage=convert", f"out_dir={run}", f"merged_dir={tmp_path / '3dpw'}",
           "allow_partial=true")
    assert len(np.load(tmp_path / "3dpw" / "3dpw_test.npz")["imgname"]) == 8
    assert not (tmp_path / "3dpw" / "3dpw_train.npz").exists()


def test_a_missing_regressor_is_a_one_line_refusal(raw: Path, tmp_path: Path) -> None:
    done = convert(raw, tmp_path / "run", check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "dataset.joint_regressor is not set" in lines[0] and "(17, 24)" in lines[0]
    wrong = raw.parent / "wrong.npy"
    np.save(wrong, np.ones((17, 6890)))
    refused = convert(raw, tmp_path / "run", f"dataset.joint_regressor={wrong}", check=False)
    assert refused.returncode == 2 and "(17, 6890)" in refused.stderr
    assert not (tmp_path / "run").exists()
