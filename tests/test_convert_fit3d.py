"""The convert stage on a tiny raw Fit3D in the official toolkit's layout (tests/data/raw_fit3d.py: joints3d_25 and
camera JSON, H.264 videos), converted by a real SLURM array: annotation arrays as the toolkit's world-to-camera and
projection give them, computed here by hand from the JSON; frames and names as the Fit3D adapter reads them by
default; bad raw input recorded per video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SLURM_TEST_CLUSTER, launch
from data.raw_fit3d import ACTIONS, CAMERAS, FRAMES, SUBJECTS, write_raw_fit3d
from data.raw_h36m import grey

SUBSET = (f"dataset.subjects=[{','.join(SUBJECTS)}]", "dataset.cameras=[" + ",".join(f'"{c}"' for c in CAMERAS) + "]")


def convert(raw: Path, run: Path, *extra: str, check: bool = True):
    return launch("convert.py", "dataset=fit3d", f"raw_root={raw}", f"out_dir={run}", *SUBSET, *extra, check=check)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raw_fit3d(tmp_path_factory.mktemp("raw_fit3d") / "raw")


@pytest.fixture(scope="module")
def converted(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted by a 3-task SLURM array (local processes where no cluster answers) and merged."""
    from conftest import _slurm_answers

    base = tmp_path_factory.mktemp("convert_fit3d")
    cluster = SLURM_TEST_CLUSTER if _slurm_answers() is None else ("cluster=local",)
    convert(raw, base / "run", "shards=3", *cluster)
    launch("merge.py", "dataset=fit3d", "stage=convert", f"out_dir={base / 'run'}", f"merged_dir={base / 'fit3d'}")
    return base / "fit3d"


def by_hand(raw: Path, subject: str, camera: str, action: str, step: int = 1):
    """Per kept frame: 17 x [u, v] and 17 x [X, Y, Z], point by point: X_c = R (X_w - T) (the toolkit's
    (X_w - T) R^T), then its distorted projection with p swapped (x pairs with p2, y with p1)."""
    folder = raw / "train" / subject
    joints = json.loads((folder / "joints3d_25" / f"{action}.json").read_text())["joints3d_25"]
    parameters = json.loads((folder / "camera_parameters" / camera / f"{action}.json").read_text())
    rotation, shift = parameters["extrinsics"]["R"], parameters["extrinsics"]["T"][0]
    intrinsics = parameters["intrinsics_w_distortion"]
    (fx, fy), (cx, cy) = intrinsics["f"][0], intrinsics["c"][0]
    (k1, k2, k3), (p1, p2) = intrinsics["k"][0], intrinsics["p"][0]
    parts, points = [], []
    for frame in range(0, len(joints), step):
        part, camera_points = [], []
        for joint in joints[frame][:17]:
            offset = [joint[axis] - shift[axis] for axis in range(3)]
            X, Y, Z = (sum(rotation[row][axis] * offset[axis] for axis in range(3)) for row in range(3))
            x, y = X / Z, Y / Z
            r2 = x * x + y * y
            factor = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3 + x * p2 + y * p1
            part.append([fx * (x * factor + r2 * p2) + cx, fy * (y * factor + r2 * p1) + cy])
            camera_points.append([X, Y, Z])
        parts.append(part)
        points.append(camera_points)
    return parts, points


def test_annotation_follows_the_toolkit(raw: Path, converted: Path) -> None:
    ours = np.load(converted / "fit3d.npz", allow_pickle=False)
    assert sorted(ours.files) == ["S", "center", "imgname", "part", "scale"]
    videos = [(s, c, a) for s in SUBJECTS for c in CAMERAS for a in ACTIONS]  # subject, camera, action order
    assert ours["imgname"].tolist() == [f"{s}_{c}-0_{a}.mp4_{frame:06d}.jpg" for s, c, a in videos
                                        for frame in range(FRAMES)]
    parts, points = [], []
    for video in videos:
        part, camera_points = by_hand(raw, *video)
        parts += part
        points += camera_points
    for key in ("center", "scale", "part", "S"):
        assert ours[key].dtype == np.float64, key
    np.testing.assert_allclose(ours["part"][..., :2], parts, rtol=1e-12)
    np.testing.assert_allclose(ours["S"][..., :3], points, rtol=1e-12)
    assert (ours["part"][..., 2] == 1).all() and (ours["S"][..., 3] == 1).all()
    box = np.array(parts)
    np.testing.assert_allclose(ours["scale"], 1.2 * (box.max(axis=1) - box.min(axis=1)).max(axis=1) / 200)


def test_frames_are_auglifts_files(converted: Path) -> None:
    """Flat in images/, no `-0`, file number = frame + 1; frame i of the video decodes to its grey level."""
    names = sorted(path.name for path in (converted / "images").iterdir())
    assert len(names) == len(SUBJECTS) * len(CAMERAS) * len(ACTIONS) * FRAMES
    assert names[:FRAMES] == [f"s03_50591643_band_pull_apart.mp4_{n:06d}.jpg" for n in range(1, FRAMES + 1)]
    for name in names[:FRAMES]:
        pixels = np.asarray(Image.open(converted / "images" / name).convert("RGB"), dtype=np.float64)
        assert abs(pixels.mean() - grey(int(name[-10:-4]) - 1)) < 3, name


def test_depth_launch_reads_the_converted_root(converted: Path, tmp_path: Path) -> None:
    done = launch("depth.py", "dataset=fit3d", f"dataset.root={converted}", "stage=depth_demo", "cluster=local",
                  "dry_run=true", f"out_dir={tmp_path / 'depth'}")
    assert "layout=auglift " in done.stderr and "40 items" in done.stdout
    launch("run.py", "stage=image_stats", "dataset=fit3d", f"dataset.root={converted}", "cluster=local",
           f"out_dir={tmp_path / 'stats'}")
    assert "merged:" in launch("merge.py", "dataset=fit3d", "stage=image_stats", f"out_dir={tmp_path / 'stats'}").stdout


def test_sample_rate_keeps_every_nth_frame(raw: Path, tmp_path: Path) -> None:
    convert(raw, tmp_path / "run", "cluster=local", "dataset.sample_rate=2", "dataset.subjects=[s10]")
    launch("merge.py", "dataset=fit3d", "stage=convert", f"out_dir={tmp_path / 'run'}", f"merged_dir={tmp_path / 'f'}")
    ours = np.load(tmp_path / "f" / "fit3d.npz")
    assert ours["imgname"][:3].tolist() == [f"s10_50591643-0_band_pull_apart.mp4_{n:06d}.jpg" for n in (0, 2, 4)]
    np.testing.assert_allclose(ours["part"][:3, :, :2], by_hand(raw, "s10", "50591643", "band_pull_apart", 2)[0],
                               rtol=1e-12)
    image = tmp_path / "f" / "images" / "s10_50591643_band_pull_apart.mp4_000003.jpg"  # frame 2
    assert abs(np.asarray(Image.open(image).convert("L"), dtype=np.float64).mean() - grey(2)) < 3


def test_bad_raw_input_is_recorded_per_video_and_the_rest_converts(tmp_path: Path) -> None:
    raw = write_raw_fit3d(tmp_path / "raw")
    truncated = raw / "train" / "s03" / "videos" / CAMERAS[0] / f"{ACTIONS[0]}.mp4"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    missing = raw / "train" / "s03" / "camera_parameters" / CAMERAS[1] / f"{ACTIONS[1]}.json"
    missing.unlink()
    longer = raw / "train" / "s10" / "joints3d_25" / f"{ACTIONS[0]}.json"  # 9 frames of joints, 7 of video
    longer.write_text(json.dumps({"joints3d_25": np.zeros((FRAMES + 4, 25, 3)).tolist()}))
    run = tmp_path / "run"
    done = convert(raw, run, "cluster=local", "shards=2", "max_attempts=1", check=False)
    assert done.returncode == 1, done.stderr
    errors = json.loads(launch("status.py", "dataset=fit3d", "stage=convert", f"out_dir={run}", "errors=true",
                               "output=json").stdout)
    by_item = {record["item"]: record["error"] for record in errors}
    assert set(by_item) == {f"s03_{CAMERAS[0]}_{ACTIONS[0]}", f"s03_{CAMERAS[1]}_{ACTIONS[1]}",
                            f"s10_{CAMERAS[0]}_{ACTIONS[0]}", f"s10_{CAMERAS[1]}_{ACTIONS[0]}"}
    assert str(truncated) in by_item[f"s03_{CAMERAS[0]}_{ACTIONS[0]}"]
    assert str(missing) in by_item[f"s03_{CAMERAS[1]}_{ACTIONS[1]}"]
    assert "decoded 7 of the 9 frames" in by_item[f"s10_{CAMERAS[1]}_{ACTIONS[0]}"]
    launch("merge.py", "dataset=fit3d", "stage=convert", f"out_dir={run}", f"merged_dir={tmp_path / 'fit3d'}",
           "allow_partial=true")
    assert len(np.load(tmp_path / "fit3d" / "fit3d.npz")["imgname"]) == 4 * FRAMES
