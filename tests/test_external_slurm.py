"""External stages through the real SLURM array: the three-stage chain queued by one command (afterok) with its
packaging merge, and a killed array resumed without losing or redoing finished items."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import SLURM_TEST_CLUSTER, launch
from external_helpers import checkpoint_of, make_videos, use_tools, video_overrides

pytestmark = pytest.mark.slurm


def _sacct(job: str) -> list[tuple[str, str, str]]:
    """(start, end, state) of each task of an array job."""
    shown = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "--format=Start,End,State"], capture_output=True,
                           text=True, check=True).stdout
    return [tuple(line.split("|")) for line in shown.splitlines() if line]


def test_chain_on_slurm_with_oom_retries_and_packaging(slurm: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "videos"
    make_videos(root, train=3, val=1)
    broken = root / "train" / "broken.npy"  # a valid header over too little data: the camera tool fails on it
    np.save(broken, np.zeros((4, 6, 8, 3), np.uint8))
    broken.write_bytes(broken.read_bytes()[:-100])
    use_tools(monkeypatch, tmp_path / "out")
    done = launch("pipeline.py", "pipeline=test_chain", *video_overrides(root), *SLURM_TEST_CLUSTER, "shards=2",
                  "merge_after=true", "allow_partial=true", "workers=1", check=False)
    assert done.returncode == 1, done.stderr  # one item could not be done
    runs = tmp_path / "out" / "video"
    reasons = {stage: [json.loads(line) for path in (runs / stage).glob("errors/*.jsonl")
                       for line in path.read_text().splitlines()]
               for stage in ("test_camera", "test_tracker", "test_hands")}
    assert [e["item"] for e in reasons["test_camera"]] == ["train__broken"]
    assert "tool exited with status 1" in reasons["test_camera"][0]["error"]
    assert "not fully written" in reasons["test_camera"][0]["error"]  # the tail of the tool's own traceback
    for stage, upstream in (("test_tracker", "camera"), ("test_hands", "tracks")):
        assert [e["item"] for e in reasons[stage]] == ["train__broken"]
        assert f"output {upstream!r} of item train__broken is missing" in reasons[stage][0]["error"]
    jobs = [line.split()[3].rstrip(":") for line in done.stdout.splitlines() if line.startswith("submitted slurm job")]
    assert len(jobs) == 3
    # Each array waited for the previous one: queued with afterok on it, started after it ended.
    for upstream, job in itertools.pairwise(jobs):
        assert {state for _, _, state in _sacct(job)} == {"COMPLETED"}
        assert min(start for start, _, _ in _sacct(job)) >= max(end for _, end, _ in _sacct(upstream))
    items = ["train__clip0", "train__clip1", "train__clip2", "val__clip0"]
    for item in items:
        meta = json.loads((checkpoint_of(runs / "test_tracker", item, "tracks") / "meta.json").read_text())
        assert meta["batch_size"] == 2 and meta["utils"] == "tracker"
    merged = runs / "test_hands" / "merged"
    assert "merged:" in done.stdout, done.stdout
    assert list(json.loads((merged / "packaging_status.json").read_text())["missing"]) == ["train__broken"]
    assert not (merged / "train__broken.h5").exists()
    flat = []
    for item in items:
        keypoints = np.load(checkpoint_of(runs / "test_hands", item, "hands") / "keypoints.npy")
        with h5py.File(merged / f"{item}.h5") as handle:
            np.testing.assert_array_equal(handle["test_hands/hands/keypoints"][()], keypoints)
        if item.startswith("train"):
            flat.append(keypoints.reshape(-1, 3).astype(np.float64))
    stats = yaml.safe_load((merged / "normalization_stats.yaml").read_text())["arrays"]["test_hands/hands/keypoints"]
    np.testing.assert_allclose(stats["mean"], np.concatenate(flat).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], np.concatenate(flat).std(axis=0), rtol=1e-9)


def test_killed_array_resumes_without_losing_or_redoing_items(slurm: None, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "videos"
    make_videos(root, train=6, val=0)
    use_tools(monkeypatch, tmp_path / "out")
    overrides = ["stage=test_camera", *video_overrides(root), *SLURM_TEST_CLUSTER, "shards=1",
                 "stage.options.sleep=1.5"]
    first = launch("run.py", *[o for o in overrides if o != "wait=true"])
    job = next(line.split()[3].rstrip(":") for line in first.stdout.splitlines() if line.startswith("submitted slurm job"))
    run_dir = tmp_path / "out" / "video" / "test_camera"
    deadline = time.monotonic() + 120
    while len(list(run_dir.glob("checkpoints/*/*.camera"))) < 2:
        assert time.monotonic() < deadline, "the array never got going"
        time.sleep(0.3)
    subprocess.run(["scancel", job], check=True)
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, check=False).stdout.strip():
        time.sleep(0.5)
    before = {path.name: json.loads((path / "meta.json").read_text())["pid"]
              for path in run_dir.glob("checkpoints/*/*.camera")}
    assert 2 <= len(before) < 6
    launch("run.py", *overrides)
    after = {path.name: json.loads((path / "meta.json").read_text())["pid"]
             for path in run_dir.glob("checkpoints/*/*.camera")}
    assert len(after) == 6
    assert {name: after[name] for name in before} == before  # finished items were kept, not redone
    assert not list(run_dir.glob("checkpoints/*/.tmp-*")) and not list(run_dir.glob("scratch/*/*"))
