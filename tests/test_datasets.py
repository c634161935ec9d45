"""The four dataset adapters on synthetic mini-datasets: item order, sequences, splits, reading, launch-time errors."""

from __future__ import annotations

import json
import re
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


def test_bare_mmpose_dataset_refuses_a_missing_image_at_launch(tmp_path: Path) -> None:
    """`MMPoseDataset` (any NPZ in MMPose's body-3D format + an image folder) checks its images before submission too."""
    make_h36m_like = MAKERS["h36m"]
    root = Path(make_h36m_like(tmp_path / "h36m")[1].split("=", 1)[1])
    missing = "S5/S5_Walking_1.54138969/S5_Walking_1.54138969_000002.jpg"
    (root / "images" / missing).unlink()
    out = tmp_path / "run"
    done = launch("run.py", "stage=image_stats", "dataset._target_=shardprep.datasets.mmpose_npz.MMPoseDataset",
                  "dataset.name=mine", "~dataset.root", "~dataset.sequences", "~dataset.frames_per_sequence",
                  "~dataset.subjects", f"+dataset.annotation={root / 'annotation_body3d/fps10/h36m_train.npz'}",
                  f"+dataset.image_root={root / 'images'}", "cluster=debug", f"out_dir={out}", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert f"1 of 6 images are missing, first {root / 'images' / missing} (row 4)" in line, line
    assert "holds e.g. 'S5_Walking_1.54138969_000001.jpg'" in line and "dataset.image_root" in line
    assert not out.exists() or not any(out.iterdir())
    # A key the changed class does not take: one line naming the class and how to remove it, no traceback.
    done = launch("run.py", "stage=image_stats", "dataset._target_=shardprep.datasets.mmpose_npz.MMPoseDataset",
                  "dataset.name=mine", "~dataset.root", "~dataset.sequences", "~dataset.frames_per_sequence",
                  f"+dataset.annotation={root / 'annotation_body3d/fps10/h36m_train.npz'}",
                  f"+dataset.image_root={root / 'images'}", "cluster=debug", f"out_dir={out}", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "unexpected keyword argument 'subjects'" in done.stderr and "~dataset.<key>" in done.stderr


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


def _h36m_with(roots: dict[str, list[str]], tmp_path: Path, **changes: np.ndarray) -> list[str]:
    """The H36M train annotation saved as the converter does (np.savez) with some arrays changed."""
    root = Path(roots["h36m"][1].split("=", 1)[1])
    arrays = {**read_npz(root / "annotation_body3d/fps10/h36m_train.npz"), **changes}
    np.savez(tmp_path / "changed.npz", **arrays)
    return [*roots["h36m"], f"dataset.annotations.train={tmp_path / 'changed.npz'}"]


def _train_arrays(roots: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return read_npz(Path(roots["h36m"][1].split("=", 1)[1]) / "annotation_body3d/fps10/h36m_train.npz")


@pytest.mark.parametrize("key, row, value", [("center", 2, np.nan), ("scale", 0, np.inf), ("part", 4, np.nan),
                                             ("S", 5, -np.inf)])
def test_nan_or_inf_is_refused_naming_the_rows(key: str, row: int, value: float, roots, tmp_path: Path) -> None:
    array = _train_arrays(roots)[key].copy()
    array[row] = value
    with pytest.raises(ConfigError, match=f"'{key}' holds NaN/Inf in 1 row\\(s\\): {row} \\(S[15]/"):
        dataset_of(_h36m_with(roots, tmp_path, **{key: array}))


@pytest.mark.parametrize("name", ["../S1/S1_Walking_1.54138969_000001.jpg", "/etc/S1_Walking_1.54138969_000001.jpg",
                                  "S1/../../S1_Walking_1.54138969_000001.jpg"])
def test_imgname_outside_the_image_root_is_refused(name: str, roots, tmp_path: Path) -> None:
    names = _train_arrays(roots)["imgname"].copy().astype("<U64")
    names[1] = name
    with pytest.raises(ConfigError, match=f"row 1: imgname '{re.escape(name)}' points outside the image root"):
        dataset_of(_h36m_with(roots, tmp_path, imgname=names))


def test_bytes_imgnames_are_read_as_text(roots, tmp_path: Path) -> None:
    names = _train_arrays(roots)["imgname"]
    dataset = dataset_of(_h36m_with(roots, tmp_path, imgname=np.char.encode(names, "utf-8")))
    assert dataset.tables()["train"]["imgname"].tolist() == names.tolist()
    assert [item.id for item in dataset.items() if item.group == "train"][0] == "S1_Walking_1.54138969_000001"


def test_duplicate_ids_are_refused_naming_both_rows(roots, tmp_path: Path) -> None:
    names = _train_arrays(roots)["imgname"].copy()
    names[4] = names[1]
    with pytest.raises(ConfigError, match="two rows give item id 'S1_Walking_1.54138969_000002': row 1 .* and row 4"):
        dataset_of(_h36m_with(roots, tmp_path, imgname=names))
    # Across splits: the same frame in train and test.
    test_file = Path(roots["h36m"][1].split("=", 1)[1]) / "annotation_body3d/fps10/h36m_train.npz"
    with pytest.raises(ConfigError, match="dataset h36m: two rows give item id .*: test row 0 .* and train row 0"):
        dataset_of([*roots["h36m"], f"dataset.annotations.test={test_file}"])


def test_ids_are_unique_by_relative_path(tmp_path: Path) -> None:
    """EMDB-style `<sequence>/00000.jpg`: one stem in every folder."""
    from shardprep.datasets.mmpose_npz import MMPoseDataset
    from data.minisets import _photo, _row, _save

    names = [f"{sequence}/{frame:05d}.jpg" for sequence in ("P0_00_mvs_a", "P1_02_walk") for frame in range(2)]
    for name in names:
        _save(tmp_path / "images" / name, _photo())
    rows = [_row(0) for _ in names]
    np.savez(tmp_path / "a.npz", imgname=np.array(names), **{k: np.stack([r[k] for r in rows]) for k in rows[0]})
    dataset = MMPoseDataset("emdb", str(tmp_path / "a.npz"), str(tmp_path / "images"))
    dataset.validate()
    assert [item.id for item in dataset.items()] == ["P0_00_mvs_a+00000", "P0_00_mvs_a+00001", "P1_02_walk+00000",
                                                    "P1_02_walk+00001"]


def _bomb(path: Path, rows: int) -> None:
    """A tiny NPZ whose `part` member inflates to rows*17*3 float64 zeros (deflate), written in chunks."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for key, array in (("imgname", np.array(["a.jpg"])), ("center", np.zeros((1, 2))), ("scale", np.zeros(1))):
            archive.writestr(f"{key}.npy", _npy(array))
        with archive.open("part.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, {"descr": "<f8", "fortran_order": False,
                                                          "shape": (rows, 17, 3)})
            chunk = bytes(1 << 22)
            for _ in range(rows * 17 * 3 * 8 // len(chunk)):
                member.write(chunk)


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_broken_annotation_files_give_one_line(roots, tmp_path: Path) -> None:
    good = Path(roots["h36m"][1].split("=", 1)[1]) / "annotation_body3d/fps10/h36m_train.npz"
    data = good.read_bytes()
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("imgname,center\n")
    _bomb(tmp_path / "bomb.npz", rows=1 << 19)  # 0.2 MB on disk, 214 MB of float64 once inflated
    import zipfile

    with zipfile.ZipFile(tmp_path / "short.npz", "w") as archive:  # declares 6 rows, holds 2
        archive.writestr("imgname.npy", _npy(np.array(["a.jpg"] * 6)))
        archive.writestr("part.npy", _npy(np.zeros((6, 17, 3)))[:-4 * 17 * 3 * 8])
    assert (tmp_path / "bomb.npz").stat().st_size < 4 << 20
    for name, error in (("empty", "the file is empty"), ("truncated", "not an NPZ \\(zip\\) file, or truncated"),
                        ("text", "not an NPZ \\(zip\\) file"), ("bomb", "member 'part' inflates from .* refused as a zip bomb"),
                        ("short", "member 'part' declares shape \\(6, 17, 3\\) .* the file is damaged")):
        with pytest.raises(ConfigError, match=f"{name}.npz: {error}"):
            dataset_of([*roots["h36m"], f"dataset.annotations.train={tmp_path / name}.npz"])
    done = launch("run.py", "stage=image_stats", *roots["h36m"], f"dataset.annotations.train={tmp_path}/bomb.npz",
                  "cluster=debug", f"out_dir={tmp_path / 'run'}", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "zip bomb" in done.stderr


def test_16_bit_grey_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    from PIL import Image

    from shardprep.datasets.mmpose_npz import read_rgb

    grey = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"  # how Pillow opens a 16-bit grey PNG
    image = read_rgb(tmp_path / "g16.png")
    assert image.dtype == np.uint8 and image.shape == (8, 8, 3)
    np.testing.assert_array_equal(image[..., 0], np.rint(grey / 257).astype(np.uint8))
    Image.fromarray(grey.astype(np.int32) * 1000).save(tmp_path / "i32.tif")
    with pytest.raises(ValueError, match="i32.tif has mode 'I' .* convert it to 8- or 16-bit"):
        read_rgb(tmp_path / "i32.tif")
