"""The events stage through the launchers on one machine (cluster=debug): every artifact's content, resume at the
missing artifact, per-clip errors for bad inputs, status by group, and the JSON merge."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import h5py
import numpy as np
import pytest
from conftest import launch
from data.dsec_synthetic import make_dataset, make_sequence, read_all_events
from PIL import Image

from shardprep.datasets.dsec import DSECDataset
from shardprep.merge.dsec_json import DSECJsonMerge
from shardprep.merge.job import MergeJob
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.npz import read_npz
from shardprep.runtime.run_folder import RunFolder
from shardprep.stages.events.render import render_loop

DURATIONS = "dataset.durations_ms=[500,1000,2000]"
ITEMS = 26


def run_events(root: Path, run_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return launch("events.py", "dataset=dsec", f"dataset.root={root}", DURATIONS, "cluster=debug",
                  f"out_dir={run_dir}", *overrides, check=check)


def checkpoint_files(run_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in (run_dir / "checkpoints").glob("shard-*/*")}


@pytest.fixture(scope="module")
def dsec(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic DSEC root and a complete two-shard run over it."""
    root = tmp_path_factory.mktemp("dsec")
    make_dataset(root)
    run_dir = root.parent / "run"
    run_events(root, run_dir, "shards=2")
    return root, run_dir


def probe(video: Path) -> str:
    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(video)], capture_output=True,
                          text=True)
    return next(line for line in done.stderr.splitlines() if "Video:" in line)


def test_every_artifact_of_every_clip(dsec: tuple[Path, Path]) -> None:
    root, run_dir = dsec
    files = checkpoint_files(run_dir)
    assert len(files) == 4 * ITEMS
    data = DSECDataset("dsec", str(root), {"train": "train", "test": "test"}, [500, 1000, 2000])
    for item in data.items():
        clip = data.clip(item)
        full = read_all_events(clip.events_file)
        absolute = full["t_offset"] + full["t"].astype(np.int64)
        chosen = (absolute >= clip.start_us) & (absolute < clip.end_us)
        events = read_npz(files[f"{item.id}.events.npz"])
        assert events["x"].dtype == np.uint16 and events["t"].dtype == np.uint32 and events["p"].dtype == np.uint8
        for key in ("x", "y", "p"):
            assert np.array_equal(events[key], full[key][chosen]), (item.id, key)
        assert np.array_equal(events["t"], absolute[chosen] - clip.start_us)
        assert (int(events["start_us"]), int(events["end_us"]), int(events["duration_ms"]), int(events["count"])) == (
            clip.start_us, clip.end_us, clip.duration_ms, int(chosen.sum()))

        image = Image.open(files[f"{item.id}.png"])
        assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (640, 480))
        assert np.array_equal(np.asarray(image), render_loop(events["x"], events["y"], events["p"], 640, 480))

        frames = files[f"{item.id}.frames"]
        assert [int(t) for t in (frames / "timestamps.txt").read_text().split()] == list(clip.frame_timestamps)
        assert all(os.path.samefile(frames / f"{i:06d}.png", source) for i, source in enumerate(clip.frames))

    video = files["train.1s.zurich_city_00_a.00001.mp4"]
    assert re.search(r"h264 .*yuv420p.*32x24.* 20 fps", probe(video))
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == 20


def test_a_partly_done_clip_resumes_at_the_missing_artifact(dsec: tuple[Path, Path], tmp_path: Path) -> None:
    root, original = dsec
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir, symlinks=True)
    files = checkpoint_files(run_dir)
    redo = ["train.500ms.zurich_city_00_a.00002.mp4", "train.1s.zurich_city_01_b.00000.png",
            "test.500ms.interlaken_00_a.00001.events.npz", "train.2s.zurich_city_00_a.00000.frames"]
    for name in redo[:3]:
        files[name].unlink()
    shutil.rmtree(files[redo[3]])
    truncated = "train.500ms.zurich_city_01_b.00003.mp4"
    files[truncated].write_bytes(files[truncated].read_bytes()[:-100])
    before = {name: path.stat().st_mtime_ns for name, path in files.items() if name not in [*redo, truncated]}

    groups = json.loads(launch("status.py", f"out_dir={run_dir}", "by=group", "output=json").stdout)["groups"]
    by_name = {row["group"]: row for row in groups}
    # status counts valid files: the deleted mp4 and the truncated one are both missing from "video"
    assert by_name["train/500ms"]["outputs"] == {"events": 14, "image": 14, "frames": 14, "video": 12}
    assert by_name["train/2s"]["complete"] == 1 and by_name["test/500ms"]["outputs"]["events"] == 2

    run_events(root, run_dir, "shards=2")
    after = checkpoint_files(run_dir)
    assert sorted(after) == sorted(files)
    assert {name: after[name].stat().st_mtime_ns for name in before} == before
    processed = sum(RunFolder(run_dir).progress(shard).attempts[-1].processed for shard in (0, 1))
    assert processed == 5
    for name in ("test.500ms.interlaken_00_a.00001.events.npz", "train.1s.zurich_city_01_b.00000.png"):
        assert after[name].read_bytes() == (original / after[name].relative_to(run_dir)).read_bytes()
    table = launch("status.py", f"out_dir={run_dir}", "by=group").stdout
    assert table.splitlines()[0].split() == ["group", "events", "image", "frames", "video", "complete"]
    assert table.splitlines()[-1].split() == ["total", *[f"{ITEMS}/{ITEMS}"] * 5]


def test_bad_inputs_are_per_clip_errors_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "dsec"
    short = {"duration_ms": 850, "frames": 17}
    for name in ("a_good", "b_corrupt", "c_missing", "d_no_table", "e_bad_frame"):
        make_sequence(root / "train" / name, seed=len(name), **short)
    events = {name: root / "train" / name / "events" / "left" / "events.h5" for name in ("b_corrupt", "c_missing",
                                                                                          "d_no_table")}
    events["b_corrupt"].write_bytes(events["b_corrupt"].read_bytes()[:3000])
    events["c_missing"].unlink()
    with h5py.File(events["d_no_table"], "a") as h5:
        del h5["ms_to_idx"]
    (root / "train" / "e_bad_frame" / "images" / "left" / "rectified" / "000012.png").write_bytes(b"\x89PNG broken")

    run_dir = tmp_path / "run"
    done = launch("events.py", "dataset=dsec", f"dataset.root={root}", "~dataset.splits.test",
                  "dataset.durations_ms=[500]", "cluster=debug", f"out_dir={run_dir}", check=False)
    assert done.returncode == 1
    errors = {}
    for line in (run_dir / "errors" / "shard-00000.jsonl").read_text().splitlines():
        record = json.loads(line)
        errors.setdefault(record["item"], record["error"])
    assert set(errors) == {f"train.500ms.{name}.{i:05d}" for name in ("b_corrupt", "c_missing", "d_no_table")
                           for i in (0, 1)} | {"train.500ms.e_bad_frame.00001"}
    assert "b_corrupt/events/left/events.h5: not a readable HDF5 file" in errors["train.500ms.b_corrupt.00000"]
    assert "c_missing/events/left/events.h5: events file not found" in errors["train.500ms.c_missing.00000"]
    assert "d_no_table/events/left/events.h5: missing /ms_to_idx" in errors["train.500ms.d_no_table.00001"]
    assert "e_bad_frame/images/left/rectified/000012.png: cannot read frame" in errors["train.500ms.e_bad_frame.00001"]
    files = checkpoint_files(run_dir)
    assert {f"train.500ms.a_good.0000{i}.{suffix}" for i in (0, 1) for suffix in ("events.npz", "png", "frames",
                                                                                     "mp4")} <= set(files)
    # The clip with the bad frame keeps what it could make and only lacks its video.
    assert {name for name in files if name.startswith("train.500ms.e_bad_frame.00001")} == {
        "train.500ms.e_bad_frame.00001.events.npz", "train.500ms.e_bad_frame.00001.png",
        "train.500ms.e_bad_frame.00001.frames"}


def merge_job(run_dir: Path, out_dir: Path, allow_partial: bool = False) -> MergeJob:
    return MergeJob(config={}, run_dir=run_dir, manifest=RunFolder(run_dir).manifest(), folder=RunFolder(run_dir), out_dir=out_dir, format=None,
                    workers=1, allow_partial=allow_partial)


FOLDERS = ["dsec_test_500ms", "dsec_test_1s", "dsec_train_500ms", "dsec_train_1s", "dsec_train_2s"]


def published_paths(entry: dict) -> list[str]:
    images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    return [entry["event_data"], entry["video_data"], entry["video_frames"], *images]


def test_merge_publishes_a_folder_per_split_and_duration_that_can_be_moved(dsec: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    root, run_dir = dsec
    done = launch("merge.py", "dataset=dsec", "stage=events", f"out_dir={run_dir}", f"merged_dir={tmp_path / 'merged'}",
                  "++merge.prompt='<event> What happens in these {duration} of {sequence}?'", "++merge.answer='clip {clip}'")
    written = [Path(line.removeprefix("merged: ")) for line in done.stdout.splitlines() if line.startswith("merged: ")]
    assert [p.name for p in written] == FOLDERS
    # the completeness table: every clip has each kind of file and a JSON entry
    assert re.search(r"dsec_train_1s\s+6\s+6\s+6\s+6\s+6", done.stdout), done.stdout
    # published files are hard links to the checkpoints (same file system here): no bytes copied
    npz = written[3] / "event_npy" / "zurich_city_00_a" / "000000.npz"
    checkpoint = next((run_dir / "checkpoints").glob("shard-*/train.1s.zurich_city_00_a.00000.events.npz"))
    assert npz.stat().st_ino == checkpoint.stat().st_ino
    moved = tmp_path / "elsewhere" / "published"
    shutil.move(tmp_path / "merged", moved)
    entries = json.loads((moved / "dsec_train_1s" / "dsec_train_1s.json").read_text())
    assert len(entries) == 6
    first = entries[0]
    assert first["id"] == "train.1s.zurich_city_00_a.00000"
    assert first["conversations"] == [
        {"from": "human", "value": "<event> What happens in these 1s of zurich_city_00_a?"},
        {"from": "gpt", "value": "clip 0"},
    ]
    assert first["event_data"] == "event_npy/zurich_city_00_a/000000.npz"
    assert first["image"] == "event_image/zurich_city_00_a/000000_0.png"
    assert first["video_data"] == "mp4/zurich_city_00_a/000000.mp4"
    for name in FOLDERS:
        for entry in json.loads((moved / name / f"{name}.json").read_text()):
            for relative in published_paths(entry):
                assert not Path(relative).is_absolute()
                assert (moved / name / relative).exists(), (name, relative)
            frames = sorted((moved / name / entry["video_frames"]).iterdir())
            assert [f.name for f in frames] == [f"{i:06d}.png" for i in range(len(frames))] and frames
    # the moved copy's events equal the events the source holds for that clip (not just a file of that name)
    clip = DSECDataset("dsec", str(root), {"train": "train", "test": "test"}, [500, 1000, 2000]).clip(
        next(item for item in DSECDataset("dsec", str(root), {"train": "train", "test": "test"},
                                          [500, 1000, 2000]).items() if item.id == first["id"]))
    events = read_all_events(clip.events_file)
    absolute = events["t"].astype(np.int64) + events["t_offset"]
    inside = (absolute >= clip.start_us) & (absolute < clip.end_us)
    assert np.array_equal(read_npz(moved / "dsec_train_1s" / first["event_data"])["x"], events["x"][inside])


def test_merge_copies_when_asked(dsec: tuple[Path, Path], tmp_path: Path) -> None:
    _, run_dir = dsec
    written = DSECJsonMerge(prompt="<event>", files="copy")(merge_job(run_dir, tmp_path / "merged"))
    npz = written[0] / "event_npy" / "interlaken_00_a" / "000000.npz"
    checkpoint = next((run_dir / "checkpoints").glob("shard-*/test.500ms.interlaken_00_a.00000.events.npz"))
    assert npz.read_bytes() == checkpoint.read_bytes() and npz.stat().st_ino != checkpoint.stat().st_ino
    with pytest.raises(ConfigError, match="merge.files='symlink'"):
        DSECJsonMerge(prompt="<event>", files="symlink")


def test_merge_lists_only_complete_clips_and_reports_the_rest(dsec: tuple[Path, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    _, original = dsec
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir, symlinks=True)
    files = checkpoint_files(run_dir)
    files["train.2s.zurich_city_01_b.00000.mp4"].unlink()
    files["test.1s.interlaken_00_a.00000.png"].write_bytes(b"truncated")
    with pytest.raises(ConfigError, match=r"test/1s: 1 of 1 .*train/2s: 1 of 2 \(train.2s.zurich_city_01_b.00000\)"):
        DSECJsonMerge(prompt="<event>")(merge_job(run_dir, tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    written = DSECJsonMerge(prompt="<event>")(merge_job(run_dir, tmp_path / "merged", allow_partial=True))
    counts = {p.name: len(json.loads((p / f"{p.name}.json").read_text())) for p in written}
    assert counts == {"dsec_test_500ms": 3, "dsec_test_1s": 0, "dsec_train_500ms": 14, "dsec_train_1s": 6,
                      "dsec_train_2s": 1}
    table = capsys.readouterr().out
    # what is there is published even for an incomplete clip: the table shows the missing MP4 and image
    assert re.search(r"dsec_train_2s\s+2\s+2\s+2\s+1\s+1", table), table
    assert re.search(r"dsec_test_1s\s+1\s+0\s+1\s+1\s+0", table), table
    assert not (written[4] / "mp4" / "zurich_city_01_b").exists()


def test_bad_templates_and_stage_settings_fail_before_anything_runs(dsec: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"merge.prompt=.*\{clips\}"):
        DSECJsonMerge(prompt="<event> {clips}")
    root, _ = dsec
    done = run_events(root, tmp_path / "run", "stage.frames_mode=move", check=False)
    assert done.returncode == 2 and "stage.frames_mode='move'" in done.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_eventgpt_conventions_rectified_through_the_launchers(tmp_path: Path) -> None:
    """The eventgpt preset (5 images), EventGPT's .npy and rectification through launch/events.py and the merge."""
    root = tmp_path / "dsec"
    sequence = make_sequence(root / "train" / "seq", frames=15, duration_ms=800, gaps_ms=())
    columns, rows = np.meshgrid(np.arange(640, dtype=np.float32), np.arange(480, dtype=np.float32))
    with h5py.File(root / "train" / "seq" / "events" / "left" / "rectify_map.h5", "w") as h5:
        h5.create_dataset("rectify_map", data=np.stack([columns * 0.5 + 0.3, rows * 0.5], axis=-1))
    run_dir = tmp_path / "run"
    launch("events.py", "dataset=dsec", f"dataset.root={root}", "~dataset.splits.test", "dataset.durations_ms=[500]",
           "dataset.rectify=true", "stage.event_image=eventgpt", "stage.eventgpt_npy=true", "cluster=debug",
           f"out_dir={run_dir}")
    merged = tmp_path / "merged"
    launch("merge.py", "dataset=dsec", "stage=events", f"out_dir={run_dir}", f"merged_dir={merged}")
    folder = merged / "dsec_train_500ms"
    (entry, *_) = json.loads((folder / "dsec_train_500ms.json").read_text())
    assert entry["image"] == [f"event_image/seq/000000_{i}.png" for i in range(5)]
    assert entry["eventgpt_data"] == "event_npy/seq/000000.npy"
    events = read_all_events(sequence.folder / "events" / "left" / "events.h5")
    absolute = events["t"].astype(np.int64) + events["t_offset"]
    start = int(sequence.frame_timestamps[0])
    inside = (absolute >= start) & (absolute < start + 500_000)
    npz = read_npz(folder / entry["event_data"])
    assert npz["x"].dtype == np.float32
    assert np.allclose(npz["x"], events["x"][inside] * 0.5 + 0.3) and np.allclose(npz["y"], events["y"][inside] * 0.5)
    # image 0 by hand: the first n // 5 events at their rounded rectified pixel, the last event of a pixel winning
    share = int(inside.sum()) // 5
    x = np.floor(events["x"][inside][:share] * 0.5 + 0.3 + 0.5).astype(int)
    y = np.floor(events["y"][inside][:share] * 0.5 + 0.5).astype(int)
    expected = np.full((480, 640, 3), 255, np.uint8)
    for xi, yi, pi in zip(x, y, events["p"][inside][:share]):
        expected[yi, xi] = (255, 0, 0) if pi else (0, 0, 255)
    with Image.open(folder / entry["image"][0]) as image:
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), expected)
