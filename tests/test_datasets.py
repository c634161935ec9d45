"""The four dataset adapters on synthetic mini-datasets: item order, sequences, splits, reading, launch-time errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import launch
from data.minisets import MAKERS, make_3dpw, make_fit3d
from shardprep.runtime.build import build_dataset
from shardprep.runtime.config import load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import read_npz, write_npz

# kind: (items, splits, sequences of the first split)
EXPECTED = {
    "h36m": (12, ["test", "train"], ["S9_Walking_1.54138969", "S11_Walking_1.54138969"]),
    "3dhp": (9, ["test", "train"], ["TS1"]),
    "3dpw": (12, ["test", "train"], ["downtown_walkBridge_01"]),
    "fit3d": (12, ["all"], ["s03_50591643-0_walk_the_box", "s04_50591643-0_walk_the_box",
                            "s10_50591643-0_walk_the_box", "s11_50591643-0_walk_the_box"]),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    base = tmp_path_factory.mktemp("datasets")
    return {kind: make(base / kind) for kind, make in MAKERS.items()}


def dataset_of(overrides: list[str]):
    dataset = build_dataset(load_config(overrides))
    dataset.validate()
    return dataset


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_items_follow_the_annotation_rows(kind: str, roots: dict[str, list[str]]) -> None:
    dataset = dataset_of(roots[kind])
    items = dataset.items()
    count, splits, sequences = EXPECTED[kind]
    assert len(items) == count and len({item.id for item in items}) == count
    assert list(dict.fromkeys(item.group for item in items)) == splits
    first = [item for item in items if item.group == splits[0]]
    assert list(dict.fromkeys(item.sequence for item in first)) == sequences
    for split, table in dataset.tables().items():
        rows = [item for item in items if item.group == split]
        assert [item.index for item in rows] == list(range(len(table["imgname"])))
        assert [item.id for item in rows] == [Path(name).stem for name in table["imgname"].tolist()]


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_read_gives_the_frame_and_its_row(kind: str, roots: dict[str, list[str]]) -> None:
    dataset = dataset_of(roots[kind])
    item = dataset.items()[-1]
    payload = dataset.read(item)
    assert payload["image"].shape == (128, 128, 3) and payload["image"].dtype == np.uint8
    assert str(payload["row"]["imgname"]).endswith(f"{item.id}.jpg")
    box = payload["bbox_gt"]
    assert box.shape == (4,) and (box[:2] < box[2:]).all() and box.min() >= 0 and box.max() <= 128


def test_3dhp_joints_are_reordered_to_h36m(roots: dict[str, list[str]]) -> None:
    """The fixture writes the converter's order from joint names (raw 28 -> its 17); the adapter must undo it."""
    from data.minisets import _row

    root = Path(roots["3dhp"][1].split("=", 1)[1])
    stored = read_npz(root / "annotations/mpi_inf_3dhp_train.npz")["part"]
    reordered = dataset_of(roots["3dhp"]).tables()["train"]["part"]
    for row in range(3):  # S1_Seq1_Cam0 frames 0..2: the H36M-order skeleton the fixture started from
        np.testing.assert_allclose(reordered[row], _row(row)["part"], atol=1e-12)
    np.testing.assert_allclose(reordered[:, 0, :2], (reordered[:, 1, :2] + reordered[:, 4, :2]) / 2, atol=1e-9)
    kept = dataset_of([*roots["3dhp"], "dataset.joint_order=mpi"]).tables()["train"]["part"]
    np.testing.assert_array_equal(kept, stored)
    # MMPose's 3DHP configs: root_index=14 in the converter's order is the pelvis.
    np.testing.assert_array_equal(kept[:, 14], reordered[:, 0])


def test_3dpw_uses_gt_boxes_and_sequence_frames(roots: dict[str, list[str]]) -> None:
    dataset = dataset_of([*roots["3dpw"], "dataset.box_margin=5"])
    item = next(item for item in dataset.items() if item.id == "courtyard_relaxOnBench_00_participant1_frame00002")
    part = dataset.parts["train"].arrays["part"][item.index]
    payload = dataset.read(item)
    assert payload["use_gt_box"] is True
    np.testing.assert_allclose(payload["bbox_gt"], [*(part[:, :2].min(0) - 5), *(part[:, :2].max(0) + 5)], rtol=1e-6)
    assert dataset.parts["train"].image_path(str(payload["row"]["imgname"])).parts[-2:] == (
        "courtyard_relaxOnBench_00", "image_00002.jpg")


@pytest.mark.parametrize("layout, image", [
    ("official", "image_00002.jpg"), ("auglift", "courtyard_relaxOnBench_00_image_00002.jpg")])
def test_3dpw_layout_is_detected(layout: str, image: str, tmp_path: Path) -> None:
    dataset = dataset_of(make_3dpw(tmp_path / "3dpw", layout=layout))
    assert dataset.resolved_settings() == {"layout": layout}
    path = dataset.parts["train"].image_path("courtyard_relaxOnBench_00_participant1_frame00002.jpg")
    assert path.name == image and path.is_file()


@pytest.mark.parametrize("made, detected, image", [
    ("auglift", "auglift", "s10_50591643_walk_the_box.mp4_000003.jpg"),
    ("auglift_no_mp4", "auglift_no_mp4", "s10_50591643_walk_the_box_000003.jpg"),
    ("auglift_exact", "auglift_exact", "s10_50591643_walk_the_box.mp4_000002.jpg"),
    ("minus0", "imgname", "s10_50591643-0_walk_the_box.mp4_000003.jpg"),
])
def test_fit3d_layout_is_detected(made: str, detected: str, image: str, tmp_path: Path) -> None:
    dataset = dataset_of(make_fit3d(tmp_path / "fit3d", layout=made))
    assert dataset.resolved_settings() == {"layout": detected}
    path = dataset.parts["all"].image_path("s10_50591643-0_walk_the_box.mp4_000002.jpg")
    assert path.name == image and path.is_file()


def test_layout_fitting_twice_or_never_is_refused(tmp_path: Path) -> None:
    args = make_fit3d(tmp_path / "fit3d")
    images = tmp_path / "fit3d/images"
    for subject in ("s03", "s04", "s10", "s11"):  # file 0 too: now frame and frame + 1 both exist for every row
        (images / f"{subject}_50591643_walk_the_box.mp4_000000.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match="more than one layout, 'auglift' .* and 'auglift_exact' .*dataset.layout"):
        dataset_of(args)
    assert dataset_of([*args, "dataset.layout=auglift"]).parts["all"].layout.frame_offset == 1
    (images / "s10_50591643_walk_the_box.mp4_000001.jpg").unlink()  # now neither fits every row
    with pytest.raises(ConfigError) as refused:
        dataset_of(args)
    message = str(refused.value)
    assert "layout 'auglift' (<image_root>/{subject}_{camera_id}_{action}.mp4_{file_frame:06d}.jpg, frame +1) 1 of 12" \
           " images are missing, first " in message and "s10_50591643_walk_the_box.mp4_000001.jpg (all row 6)" in message
    assert "layout 'auglift_exact'" in message and "(all row 7)" in message and "holds e.g." in message


def test_missing_image_is_refused_at_launch_with_nothing_submitted(tmp_path: Path) -> None:
    args = make_3dpw(tmp_path / "3dpw", layout="auglift")
    (tmp_path / "3dpw/imageFiles/downtown_walkBridge_01/downtown_walkBridge_01_image_00001.jpg").unlink()
    out = tmp_path / "run"
    done = launch("run.py", "stage=image_stats", *args, "cluster=debug", f"out_dir={out}", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "2 of 12 images are missing, first" in line and "downtown_walkBridge_01_image_00001.jpg (test row 2)" in line
    assert "holds e.g. 'downtown_walkBridge_01_image_00000.jpg'" in line and "dataset.layout" in line
    assert not out.exists() or not any(out.iterdir())


def test_detected_layout_is_printed_and_recorded(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = launch("run.py", "stage=image_stats", *make_fit3d(tmp_path / "fit3d", layout="auglift_no_mp4"),
                  "cluster=debug", f"out_dir={out}")
    assert "dataset fit3d: layout=auglift_no_mp4 (detected" in done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["dataset"]["layout"] == "auglift_no_mp4"
    assert len(list(out.glob("checkpoints/shard-*/*.npz"))) == 12


def test_bad_data_is_refused_before_submission(roots: dict[str, list[str]], tmp_path: Path) -> None:
    h36m = roots["h36m"]
    root = Path(h36m[1].split("=", 1)[1])
    with pytest.raises(ConfigError, match="image root not found: .*/nowhere"):
        dataset_of([*h36m, "dataset.image_root=nowhere"])
    with pytest.raises(ConfigError, match="cameras file not found"):
        dataset_of([*h36m, "dataset.cameras=missing.pkl"])
    with pytest.raises(ConfigError, match="annotation file not found: .*fps50/h36m_train.npz"):
        dataset_of([*h36m, "dataset.annotations.train=annotation_body3d/fps50/h36m_train.npz"])

    arrays = read_npz(root / "annotation_body3d/fps10/h36m_train.npz")
    bad = tmp_path / "bad"
    write_npz(bad / "no_part.npz", {k: v for k, v in arrays.items() if k != "part"})
    write_npz(bad / "short_part.npz", {**arrays, "part": arrays["part"][:, :16]})
    write_npz(bad / "wrong_name.npz", {**arrays, "imgname": np.array(["frame_0001.jpg"] * len(arrays["imgname"]))})
    for name, error in (("no_part", "missing key\\(s\\) part"), ("short_part", "'part' has shape \\(6, 16, 3\\)"),
                        ("wrong_name", "row 0: imgname 'frame_0001.jpg' does not follow the h36m naming")):
        with pytest.raises(ConfigError, match=error):
            dataset_of([*h36m, f"dataset.annotations.train={bad / name}.npz"])

    done = launch("run.py", "stage=image_stats", *h36m, f"dataset.annotations.train={bad}/short_part.npz",
                  "cluster=debug", f"out_dir={tmp_path / 'run'}", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "short_part.npz" in done.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()
