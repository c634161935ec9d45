"""The convert stage on a tiny raw Human3.6M written the way the release is (tests/data/raw_h36m.py): a real SLURM
array, annotation arrays equal to what MMPose's own converter wrote for the same raw set (tests/data/h36m_reference,
README there), frames the converter's selection, the depth launch reading the converted root unchanged, bad raw input
recorded per video, partially extracted videos redone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SLURM_TEST_CLUSTER, launch
from data.raw_h36m import CAMERAS, grey, write_raw_h36m
from shardprep.datasets.safe_pickle import load_arrays_pickle
from shardprep.stages.frames import LISTING, validate_frame_folder

REFERENCE = Path(__file__).resolve().parent / "data" / "h36m_reference"
VIDEO = "S1_Directions_1.54138969"


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raw_h36m(tmp_path_factory.mktemp("raw_h36m") / "raw")


def convert(raw: Path, run: Path, *extra: str, check: bool = True):
    return launch("convert.py", "dataset=h36m", f"raw_root={raw}", f"out_dir={run}", *extra, check=check)


def merge(run: Path, converted: Path, *extra: str, check: bool = True):
    return launch("merge.py", "dataset=h36m", "stage=convert", f"out_dir={run}", f"merged_dir={converted}", *extra,
                  check=check)


@pytest.fixture(scope="module")
def converted(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The raw set converted by a 3-task SLURM array (local processes where no cluster answers) and merged."""
    base = tmp_path_factory.mktemp("converted")
    from conftest import _slurm_answers

    cluster = SLURM_TEST_CLUSTER if _slurm_answers() is None else ("cluster=local",)
    convert(raw, base / "run", "shards=3", *cluster)
    merge(base / "run", base / "h36m")
    return base / "h36m"


@pytest.mark.parametrize("split", ["train", "test"])
def test_annotations_equal_mmpose_converter(converted: Path, split: str) -> None:
    ours = np.load(converted / "annotation_body3d" / "fps10" / f"h36m_{split}.npz", allow_pickle=False)
    reference = np.load(REFERENCE / f"h36m_{split}.npz", allow_pickle=False)
    assert sorted(ours.files) == sorted(reference.files) == ["S", "center", "imgname", "part", "scale"]
    for key in reference.files:
        assert ours[key].dtype == reference[key].dtype, key
        assert ours[key].shape == reference[key].shape, key
        np.testing.assert_array_equal(ours[key], reference[key], err_msg=key)  # values and row order, bit for bit


def test_cameras_equal_mmpose_converter(converted: Path) -> None:
    ours = load_arrays_pickle(converted / "annotation_body3d" / "cameras.pkl")
    reference = load_arrays_pickle(REFERENCE / "cameras.pkl")
    assert list(ours) == list(reference) and ("S1", "54138969") in ours
    for key, camera in reference.items():
        assert sorted(ours[key]) == sorted(camera), key
        for field, value in camera.items():
            assert np.asarray(ours[key][field]).dtype == np.asarray(value).dtype, (key, field)
            np.testing.assert_array_equal(ours[key][field], value, err_msg=f"{key} {field}")


def test_frames_are_the_converters_selection(raw: Path, converted: Path) -> None:
    """Every 5th frame from 0, named by its 1-based 50 Hz number, decoding to the video's pixels (as OpenCV, the
    converter's reader, decodes them; JPEG-close, not bit-equal: the converter encodes with OpenCV, we with ffmpeg)."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the converter's video reader) comes with the full install")
    capture = cv2.VideoCapture(str(raw / "S1" / "Videos" / "Directions 1.54138969.mp4"))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame[..., ::-1])
    folder = converted / "images" / "S1" / VIDEO
    names = sorted(path.name for path in folder.iterdir())
    assert names == [f"{VIDEO}_{n:06d}.jpg" for n in (1, 6, 11)]  # 11 pose frames, 13 video frames
    for name in names:
        index = int(name[-10:-4]) - 1
        ours = np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.float64)
        assert abs(ours.mean() - grey(index)) < 3, name
        assert np.abs(ours - decoded[index]).mean() < 2, name


def test_depth_launch_reads_the_converted_root(converted: Path, tmp_path: Path) -> None:
    """The MMPose-format adapter with its defaults: the depth launch's checks pass (annotation files, cameras.pkl,
    every row's image), and a stage run reads every frame."""
    done = launch("depth.py", "dataset=h36m", f"dataset.root={converted}", "stage=depth_demo", "cluster=local",
                  "dry_run=true", f"out_dir={tmp_path / 'depth'}")
    assert "84 items" in done.stdout
    launch("run.py", "stage=image_stats", "dataset=h36m", f"dataset.root={converted}", "cluster=local",
           f"out_dir={tmp_path / 'stats'}")
    merged = launch("merge.py", "dataset=h36m", "stage=image_stats", f"out_dir={tmp_path / 'stats'}")
    assert "merged:" in merged.stdout


def test_cdf_pose_read_by_cdflib_and_spacepy(raw: Path) -> None:
    """The two maintained CDF readers agree on a real CDF's Pose (cdflib is the one used: pure Python)."""
    import cdflib

    pycdf = pytest.importorskip("spacepy.pycdf",
                                reason="spacepy is not installed (a test requirement: pip install -e '.[test]')")
    path = raw / "S1" / "MyPoseFeatures" / "D3_Positions_mono" / "Directions 1.54138969.cdf"
    with pycdf.CDF(str(path)) as cdf:
        by_spacepy = np.array(cdf["Pose"])
    by_cdflib = np.asarray(cdflib.CDF(str(path)).varget("Pose"))
    assert by_spacepy.shape == by_cdflib.shape == (1, 11, 96)
    assert by_spacepy.dtype == by_cdflib.dtype
    np.testing.assert_array_equal(by_cdflib, by_spacepy)


def test_bad_raw_input_is_recorded_per_video_and_the_rest_converts(tmp_path: Path) -> None:
    raw = write_raw_h36m(tmp_path / "raw", subjects=["S1", "S5", "S6", "S7", "S8", "S9", "S11"])
    truncated = raw / "S5" / "Videos" / f"Directions 1.{CAMERAS[0]}.mp4"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    short = raw / "S6" / "MyPoseFeatures" / "D3_Positions_mono" / f"Directions 1.{CAMERAS[1]}.cdf"
    from data.raw_h36m import write_cdf

    write_cdf(short, np.zeros((7, 96)))
    longer = raw / "S9" / "MyPoseFeatures"  # pose files of 20 frames for a video of 13: the video ends early
    write_cdf(longer / "D2_Positions" / f"Directions 1.{CAMERAS[0]}.cdf", np.zeros((20, 64)))
    write_cdf(longer / "D3_Positions_mono" / f"Directions 1.{CAMERAS[0]}.cdf", np.zeros((20, 96)))
    (raw / "S7" / "Videos" / f"Directions 1.{CAMERAS[2]}.mp4").unlink()
    corrupt = raw / "S8" / "MyPoseFeatures" / "D2_Positions" / f"Directions 1.{CAMERAS[3]}.cdf"
    corrupt.write_bytes(b"not a CDF" * 10)
    run = tmp_path / "run"
    done = convert(raw, run, "cluster=local", "shards=2", "max_attempts=1", check=False)
    assert done.returncode == 1, done.stderr
    errors = json.loads(launch("status.py", "dataset=h36m", "stage=convert", f"out_dir={run}", "errors=true",
                               "output=json").stdout)
    by_item = {record["item"]: record["error"] for record in errors}
    assert set(by_item) == {f"S5_Directions_1.{CAMERAS[0]}", f"S6_Directions_1.{CAMERAS[1]}",
                            f"S7_Directions_1.{CAMERAS[2]}", f"S8_Directions_1.{CAMERAS[3]}",
                            f"S9_Directions_1.{CAMERAS[0]}"}
    assert "decoded 3 of the 4 frames" in by_item[f"S9_Directions_1.{CAMERAS[0]}"]
    assert str(truncated) in by_item[f"S5_Directions_1.{CAMERAS[0]}"]
    assert "7" in by_item[f"S6_Directions_1.{CAMERAS[1]}"] and "D3_Positions_mono" in by_item[f"S6_Directions_1.{CAMERAS[1]}"]
    assert "video not found" in by_item[f"S7_Directions_1.{CAMERAS[2]}"]
    assert str(corrupt) in by_item[f"S8_Directions_1.{CAMERAS[3]}"]
    refused = merge(run, tmp_path / "h36m", check=False)
    assert refused.returncode == 2 and "5 of 28 videos are not converted" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    merge(run, tmp_path / "h36m", "allow_partial=true")
    rows = np.load(tmp_path / "h36m" / "annotation_body3d" / "fps10" / "h36m_train.npz")["imgname"]
    assert len(rows) == (20 - 4) * 3
    assert not any(name.startswith(f"S5/S5_Directions_1.{CAMERAS[0]}") for name in rows)


def test_missing_camera_is_an_item_error(tmp_path: Path) -> None:
    """A camera metadata.xml has no parameters for (w0 cut short) fails its videos only."""
    raw = write_raw_h36m(tmp_path / "raw")
    xml = (raw / "metadata.xml").read_text()
    head, w0 = xml.split("<w0>[")
    values = w0.split("]")[0].split()
    (raw / "metadata.xml").write_text(head + "<w0>[" + " ".join(values[:-9]) + "]</w0>\n</metadata>\n")
    done = convert(raw, tmp_path / "run", "cluster=local", "max_attempts=1", check=False)
    assert done.returncode == 1
    errors = json.loads(launch("status.py", "dataset=h36m", "stage=convert", f"out_dir={tmp_path / 'run'}",
                               "errors=true", "output=json").stdout)
    assert {record["item"].split(".")[-1] for record in errors} == {CAMERAS[3]}
    assert len(errors) == 7 and all("too few for camera" in record["error"] for record in errors)


def test_a_partly_extracted_video_is_redone(raw: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    convert(raw, run, "cluster=local", "dataset.subjects.train=[S1]", "dataset.subjects.test=[S9]")
    shard = run / "checkpoints" / "shard-00000"
    lost = shard / f"{VIDEO}.frames"
    (lost / f"{VIDEO}_000011.jpg").unlink()  # a frame gone
    torn = shard / "S9_Directions_1.55011271.frames"
    last = torn / "S9_Directions_1.55011271_000011.jpg"
    last.write_bytes(last.read_bytes()[:100])  # the last frame cut short
    untouched = shard / "S1_Directions_1.55011271.frames"
    before = untouched.stat().st_mtime_ns
    with pytest.raises(ValueError):
        validate_frame_folder(lost)
    with pytest.raises(OSError):
        validate_frame_folder(torn)
    convert(raw, run, "cluster=local", "dataset.subjects.train=[S1]", "dataset.subjects.test=[S9]")
    validate_frame_folder(lost)
    validate_frame_folder(torn)
    assert untouched.stat().st_mtime_ns == before
    progress = json.loads((run / "progress" / "shard-00000.json").read_text())
    assert progress["attempts"][-1]["processed"] == 2


def test_frame_folder_needs_its_listing(tmp_path: Path) -> None:
    folder = tmp_path / "x.frames"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.jpg")
    with pytest.raises(OSError):
        validate_frame_folder(folder)  # no frames.txt: extraction never finished
    (folder / LISTING).write_text("a.jpg\n")
    validate_frame_folder(folder)
    Image.new("RGB", (8, 8)).save(folder / "b.jpg")
    with pytest.raises(ValueError):
        validate_frame_folder(folder)


def test_dry_run_plans_videos_weighted_by_frames(raw: Path, tmp_path: Path) -> None:
    """Items are the 28 videos; each weighs the frames it extracts (from its CDF's header: 11 frames -> 3)."""
    done = convert(raw, tmp_path / "run", "shards=2", "cluster=local", "dry_run=true")
    assert "28 items in 2 shard(s)" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line[:1].isdigit() and len(line.split()) == 3]
    assert [(int(items), int(frames)) for _, items, frames in rows] == [(14, 42), (14, 42)]
    assert not (tmp_path / "run").exists()
    asked = launch("convert.py", "dataset=h36m", "--cfg", "job", "--package", "cluster.gpus_per_task")
    assert asked.stdout.strip().splitlines()[-1] == "0"  # converting asks for no GPU unless told


def test_convert_refuses_a_dataset_without_a_raw_form(tmp_path: Path) -> None:
    done = launch("convert.py", "dataset=dsec", f"raw_root={tmp_path}", check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "shardprep: error: dataset=dsec: no raw form of it to convert; convertible: 3dhp, 3dpw, fit3d, h36m (nothing was submitted)"]
    missing = launch("convert.py", "dataset=h36m", f"raw_root={tmp_path / 'nothing'}", "cluster=local", check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
