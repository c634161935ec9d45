"""The run folder as one owned object (issue 10), on one machine: states a user must always be able to get out of.

Each test reproduces what a user hit, through the launchers, and asserts on the files. The SLURM side (refused
submissions, live arrays, resubmit resources) is in test_run_folder_slurm.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import launch
from external_helpers import make_videos, use_tools, video_overrides

from shardprep.runtime.npz import read_npz
from shardprep.runtime.run_folder import RunFolder
from shardprep.stages.image_stats import ImageStatsStage

DEBUG = ("run.py", "cluster=debug")


def status_json(run_dir: Path, *overrides: str) -> dict:
    return json.loads(launch("status.py", f"out_dir={run_dir}", "output=json", *overrides).stdout)


def one_line_error(done) -> str:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shardprep: error: "), done.stderr
    return lines[0]


def test_force_resets_exhausted_attempts(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    failing = (*DEBUG, "stage.bins=0", "max_attempts=2", f"out_dir={run_dir}")  # passes validation, fails every item
    for _ in range(3):
        launch(*failing, demo_root=demo_root, check=False)
    status = status_json(run_dir)
    assert status["totals"]["done"] == 0 and status["gave_up"] == 12
    gave_up = launch("status.py", f"out_dir={run_dir}", demo_root=demo_root).stderr
    assert "retry_failed=true" in gave_up
    # The fix changes the fingerprint: force=true, as the refusal says, redoes all 12 items.
    launch(*DEBUG, "stage.bins=16", "max_attempts=2", "force=true", f"out_dir={run_dir}", demo_root=demo_root)
    status = status_json(run_dir)
    assert status["totals"] == {"items": 12, "done": 12, "failed": 0, "todo": 0} and status["gave_up"] == 0


def test_retry_failed_retries_items_that_gave_up_under_the_same_settings(tmp_path: Path, own_demo: Path) -> None:
    root = own_demo
    bad = sorted(root.rglob("*.jpg"))[4]
    good = bad.read_bytes()
    bad.write_bytes(b"not a jpeg")
    run_dir = tmp_path / "run"
    command = (*DEBUG, "max_attempts=1", f"out_dir={run_dir}")
    launch(*command, demo_root=root, check=False)
    bad.write_bytes(good)  # the cause is fixed; settings, hence the fingerprint, unchanged
    launch(*command, demo_root=root, check=False)
    assert status_json(run_dir)["gave_up"] == 1
    launch(*command, "retry_failed=true", demo_root=root)
    assert status_json(run_dir)["totals"]["done"] == 12


def test_status_counts_valid_files_and_resubmit_redoes_a_truncated_one(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    launch("run.py", "cluster=local", "shards=2", f"out_dir={run_dir}", demo_root=demo_root)
    status_json(run_dir)  # the validation cache is warm now
    victim = sorted(RunFolder(run_dir).shard_folder(1).iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:100])
    status = status_json(run_dir)
    assert status["totals"]["done"] == 11 and status["shards"][1]["todo"] == 1
    launch("status.py", f"out_dir={run_dir}", "resubmit=true", demo_root=demo_root)
    assert status_json(run_dir)["totals"]["done"] == 12
    assert read_npz(victim)["histogram"].shape == (3, 16)


def test_validation_cache_vouches_only_for_unchanged_files(tmp_path: Path) -> None:
    stage = ImageStatsStage("image_stats")
    folder = RunFolder(tmp_path)
    store = folder.shard_store(0, stage.outputs, "abc")
    arrays = {"mean": np.zeros(3), "std": np.ones(3), "histogram": np.zeros((3, 16), np.int64),
              "image_size": np.array([4, 4])}
    for item in "abcd":
        store.write(item, {"stats": arrays})
    assert store.scan("abcd") == ({}, 0)
    with np.load(folder.validation_cache(0)) as cache:
        assert set(cache["names"].tobytes().decode().split("\0")) == {f"{i}.npz" for i in "abcd"}
    path = store.folder / "a.npz"
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    other = RunFolder(tmp_path / "other").shard_store(0, stage.outputs, "zzz")
    other.write("b", {"stats": arrays})
    shutil.copy2(other.folder / "b.npz", store.folder / "b.npz")  # replaced by a foreign file
    reader = folder.shard_store(0, stage.outputs, "abc")
    assert reader.check_folder().valid == {"c.npz", "d.npz"}
    assert folder.shard_store(0, stage.outputs, "abc").scan("abcd") == ({"a": {"stats"}, "b": {"stats"}}, 2)


def test_torn_metadata_is_said_in_one_line_and_the_run_goes_on(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    command = (*DEBUG, "shards=2", f"out_dir={run_dir}")
    launch(*command, demo_root=demo_root)
    folder = RunFolder(run_dir)
    folder.progress_path(0).write_text("")
    with open(folder.submissions_path, "a") as log:
        log.write('{"job_id": "12')  # a torn last line
    status = launch("status.py", f"out_dir={run_dir}", demo_root=demo_root)
    assert "attempt history lost" in status.stdout and "Traceback" not in status.stderr
    launch(*command, demo_root=demo_root)  # the shard's task starts a new history
    assert len(folder.progress(0).attempts) == 1
    folder.manifest_path.write_text("")
    message = one_line_error(launch("status.py", f"out_dir={run_dir}", demo_root=demo_root, check=False))
    assert "manifest.json is empty" in message and "launch command again" in message
    before = {p.name: p.stat().st_mtime_ns for p in folder.shard_folder(0).iterdir()}
    done = launch(*command, demo_root=demo_root)
    assert "planned anew" in done.stderr
    assert {p.name: p.stat().st_mtime_ns for p in folder.shard_folder(0).iterdir()} == before  # nothing redone


def test_a_killed_merge_leaves_no_debris_and_no_mix(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    command = ("run.py", "cluster=debug", "stage=image_stats", f"out_dir={run_dir}")
    launch(*command, demo_root=demo_root)
    merged = run_dir / "merged"
    launch("merge.py", "stage=image_stats", f"out_dir={run_dir}", demo_root=demo_root)
    names = sorted(p.name for p in merged.iterdir() if not p.name.startswith("."))
    old_fingerprint = RunFolder(run_dir).manifest().fingerprint
    (merged / ".tmp-999-demo_stats.npz").write_bytes(b"x" * 1000)  # what a killed merge leaves
    (merged / "extra_from_old_run.npz").write_bytes(b"old")
    record = json.loads((merged / ".shardprep-merge.json").read_text())
    record["files"]["extra_from_old_run.npz"] = old_fingerprint
    (merged / ".shardprep-merge.json").write_text(json.dumps(record))
    launch(*command, "stage.bins=8", "force=true", demo_root=demo_root)
    done = launch("merge.py", "stage=image_stats", f"out_dir={run_dir}", demo_root=demo_root)
    assert "interrupted" in done.stderr
    assert not list(merged.glob(".tmp-*"))
    assert sorted(p.name for p in merged.iterdir() if not p.name.startswith(".") and p.is_file()) == names
    assert (merged / "stale" / old_fingerprint / "extra_from_old_run.npz").read_bytes() == b"old"
    record = json.loads((merged / ".shardprep-merge.json").read_text())
    assert record["state"] == "complete" and set(record["files"].values()) == {RunFolder(run_dir).manifest().fingerprint}


def test_dry_run_writes_nothing_and_empty_out_dir_is_refused(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    done = launch(*DEBUG, "shards=3", "dry_run=true", f"out_dir={run_dir}", demo_root=demo_root)
    assert "3 shard(s)" in done.stdout and "disk: about" in done.stdout and not run_dir.exists()
    assert "out_dir is empty" in one_line_error(launch(*DEBUG, "out_dir=", demo_root=demo_root, check=False))


def test_external_gpu_settings_are_checked_before_submission(tmp_path: Path, demo_root: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    use_tools(monkeypatch, tmp_path / "tool-runs")
    make_videos(tmp_path / "videos")
    base = ("run.py", "cluster=debug", "stage=test_camera", *video_overrides(tmp_path / "videos"),
            f"out_dir={tmp_path / 'run'}")
    for override, expected in (("stage.gpu.safety=1.5", "safety"), ("stage.gpu.max_workers=0", "max_workers"),
                               ("stage.gpu.memory=reported", "total_mb")):
        message = one_line_error(launch(*base, override, demo_root=demo_root, check=False))
        assert expected in message, message
    assert not (tmp_path / "run").exists()
