"""External-tool stages without SLURM: the pieces (video items, command runs, OOM policy, packing, output checks) and
whole runs through the in-process (`cluster=debug`) backend: a three-stage chain, failures, packaging."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import launch
from external_helpers import TOOLS, checkpoint_of, make_videos, use_tools, video_overrides
from shardprep.datasets.video import VideoDataset
from shardprep.merge.package_hdf5 import PackageHDF5, RunningStats, package
from shardprep.runtime.errors import ConfigError
from shardprep.stages.external.command import TRUST_CHECKPOINTS_ENV, Command, log_tail, run
from shardprep.stages.external.gpu_packing import NvmlMemory, Packer, ReportedMemory, reported_peak, workers_for
from shardprep.stages.external.oom import OOMPolicy
from shardprep.stages.external.outputs import FolderOutput
from shardprep.stages.external.stage import TORCH_PEAK

# --- pieces ---------------------------------------------------------------------------------------------------------

def test_video_items_are_ordered_with_stable_ids_groups_and_clips(tmp_path: Path) -> None:
    make_videos(tmp_path, train=2, val=1)
    (tmp_path / "train" / "notes.txt").write_text("not a video")
    items = VideoDataset("v", str(tmp_path)).items()
    assert [(i.id, i.group, i.weight, i.index) for i in items] == [
        ("train__clip0", "train", 4, 0), ("train__clip1", "train", 5, 1), ("val__clip0", "val", 4, 2)]
    clips = VideoDataset("v", str(tmp_path), clip_frames=3)
    assert [(i.id, i.weight) for i in clips.items()][:3] == [
        ("train__clip0.f000000", 3), ("train__clip0.f000003", 1), ("train__clip1.f000000", 3)]
    assert clips.read(clips.items()[1]) == {"path": tmp_path / "train" / "clip0.npy", "start": 3, "end": 4}
    listed = tmp_path / "list.txt"
    listed.write_text("# one video\nval/clip0.npy\n")
    assert [i.id for i in VideoDataset("v", str(tmp_path), list_file=str(listed)).items()] == ["val__clip0"]
    with pytest.raises(ConfigError, match="video root not found"):
        VideoDataset("v", str(tmp_path / "nowhere")).validate()


def test_mp4_clips_are_cut_from_the_counted_frames(tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v3 as iio

    (tmp_path / "train").mkdir()
    iio.imwrite(tmp_path / "train" / "a b.mp4", np.zeros((10, 32, 48, 3), np.uint8), fps=10)
    clips = VideoDataset("v", str(tmp_path), clip_frames=4)
    assert [(i.id, i.weight) for i in clips.items()] == [
        ("train__a_b.f000000", 4), ("train__a_b.f000004", 4), ("train__a_b.f000008", 2)]
    assert clips.read(clips.items()[2])["start"] == 8


def test_oom_policy_shrinks_to_the_floor_and_remembers_what_worked() -> None:
    policy = OOMPolicy(option="batch_size", start=16, factor=0.5, floor=3)
    sizes = [16]
    while (smaller := policy.smaller(sizes[-1])) is not None:
        sizes.append(smaller)
    assert sizes == [16, 8, 4, 3]
    assert policy.is_oom("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert policy.is_oom("torch.OutOfMemoryError: ...") and not policy.is_oom("KeyError: 'depth'")
    policy.succeeded(4)
    assert policy.current == 4
    with pytest.raises(ConfigError):
        OOMPolicy(option="b", start=4, floor=8)


def test_packer_runs_one_first_then_floor_of_free_over_peak(tmp_path: Path) -> None:
    packer = Packer(ReportedMemory(total_mb=1000), max_workers=8, safety=0.9)
    assert packer.workers() == 1  # nothing measured yet: the first item runs alone
    packer.observe(300)
    assert packer.workers() == 3  # floor(0.9 * 1000 / 300)
    packer.observe(200)  # a smaller item does not raise the count: the largest peak so far rules
    assert packer.workers() == 3
    packer.observe(500)
    assert packer.workers() == 1
    assert workers_for(80_000, 15_000, 0.9, 8) == 4  # the case: 14-17 GB tools on an 80 GB GPU
    assert workers_for(31_000, 15_000, 0.9, 8) == 1  # ... and on the 31 GB GPU where two ran out of memory
    assert Packer(None, max_workers=5).workers() == 5  # memory=none: a fixed count
    log = tmp_path / "tool.log"
    log.write_text("\n=== t $ tool --b 8\nSHARDPREP_PEAK_MEMORY_MB=800\n=== exit 1\n\n=== t $ tool --b 4\n"
                   "SHARDPREP_PEAK_MEMORY_MB=400.5\n=== exit 0\n")
    assert reported_peak(log) == 400.5


def test_command_runs_in_a_clean_process_with_its_own_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/our/modules")
    script = "import os; print('PP', os.environ.get('PYTHONPATH')); print('TRUST', os.environ.get('{var}'))"
    command = Command.from_config(["{python}", "-c", script.replace("{var}", TRUST_CHECKPOINTS_ENV)],
                                  python_env=sys.prefix, trust_checkpoints=True, env={"EXTRA": 1})
    outcome = run(command, command.argv({}), tmp_path / "log")
    assert outcome.ok
    assert "PP None" in log_tail(outcome.log) and "TRUST 1" in log_tail(outcome.log)
    assert TRUST_CHECKPOINTS_ENV not in os.environ  # our process is never patched
    with pytest.raises(ConfigError, match="unknown placeholder"):
        Command.from_config("tool --x {nope}").validate({"input"})


def test_timeout_kills_the_tool_and_its_children(tmp_path: Path) -> None:
    command = Command.from_config(["{python}", str(TOOLS / "slow.py")], python_env=sys.prefix, timeout_s=1.5)
    pids: list[int] = []
    outcome = run(command, command.argv({}), tmp_path / "log", on_start=pids.append)
    assert outcome.timed_out and not outcome.ok and outcome.seconds < 10
    time.sleep(0.2)
    assert _live_processes_of_session(pids[0]) == []  # the tool and the child it started are gone


def _live_processes_of_session(session: int) -> list[int]:
    """Processes of a session that are not zombies (a zombie left to a non-reaping init is dead already)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # fields after "(comm)": state, ppid, pgrp, session
            live.append(int(stat.parent.name))
    return live


def test_folder_outputs_catch_missing_truncated_and_misshapen_files(tmp_path: Path) -> None:
    spec = FolderOutput.from_config("tracks", {"tracks.npy": [None, 8, 3], "info.json": None})
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(ValueError, match="tracks.npy missing"):
        spec.validate(folder)
    np.save(folder / "tracks.npy", np.zeros((5, 8, 3), np.float32))
    (folder / "info.json").write_text("{}")
    spec.validate(folder)
    np.save(folder / "tracks.npy", np.zeros((5, 7, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected \(\*, 8, 3\)"):
        spec.validate(folder)
    np.save(folder / "tracks.npy", np.zeros((5, 8, 3), np.float32))
    with open(folder / "tracks.npy", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(ValueError, match="truncated"):
        spec.validate(folder)


def test_running_stats_merge_equals_numpy() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.normal(3.0, 2.0, (n, 4, 3)) for n in (1, 7, 30, 2)]
    stats = RunningStats()
    for part in parts:
        stats.add(part)
    flat = np.concatenate(parts).reshape(-1, 3)
    result = stats.as_dict()
    assert result["count"] == len(flat)
    np.testing.assert_allclose(result["mean"], flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(result["std"], flat.std(axis=0), rtol=1e-12)


# --- whole runs, in process ------------------------------------------------------------------------------------------

def _errors(run_dir: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((run_dir / "errors").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def test_chain_packs_retries_oom_and_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "videos"
    make_videos(root, train=4, val=1)
    use_tools(monkeypatch, tmp_path / "out")
    launch("pipeline.py", "pipeline=test_chain", *video_overrides(root), "cluster=debug", "shards=1",
           "test_tracker:stage.options.sleep=0.5")
    runs = tmp_path / "out" / "video"
    items = [f"train__clip{i}" for i in range(4)] + ["val__clip0"]
    for item in items:
        camera = json.loads((checkpoint_of(runs / "test_camera", item, "camera") / "meta.json").read_text())
        tracker = json.loads((checkpoint_of(runs / "test_tracker", item, "tracks") / "meta.json").read_text())
        # Each tool imported its own `utils`, saw none of our PYTHONPATH and none of our modules.
        assert (camera["utils"], tracker["utils"]) == ("camera", "tracker")
        assert camera["pythonpath"] is None and camera["shardprep_loaded"] is False
        assert tracker["batch_size"] == 2  # max_batch=2: 8 and 4 ran out of memory (first item), later items start at 2
    first_log = (runs / "test_tracker" / "tool_logs" / "train__clip0.log").read_text()
    assert [line.split("--batch-size ")[1].split()[0] for line in first_log.splitlines() if line.startswith("=== 20")] \
        == ["8", "4", "2"]
    # Packing: the first item ran alone; then floor(0.9 * 700 MiB / 200 MiB) = 3 at once, never more.
    spans = sorted((m["start"], m["end"]) for m in (
        json.loads((checkpoint_of(runs / "test_tracker", item, "tracks") / "meta.json").read_text()) for item in items))
    assert all(spans[0][1] <= start for start, _ in spans[1:])
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap == 3
    assert not _errors(runs / "test_hands")

    merged = tmp_path / "merged"
    package(runs / "test_hands", merged, PackageHDF5(stats=["test_tracker/tracks/tracks", "test_hands/hands/keypoints"]))
    train_tracks, train_keypoints = [], []
    for item in items:
        tracks = np.load(checkpoint_of(runs / "test_tracker", item, "tracks") / "tracks.npy")
        keypoints = np.load(checkpoint_of(runs / "test_hands", item, "hands") / "keypoints.npy")
        depth = np.load(checkpoint_of(runs / "test_camera", item, "camera") / "depth.npy")
        with h5py.File(merged / f"{item}.h5") as handle:
            np.testing.assert_array_equal(handle["test_tracker/tracks/tracks"][()], tracks)
            np.testing.assert_array_equal(handle["test_hands/hands/keypoints"][()], keypoints)
            np.testing.assert_array_equal(handle["test_camera/camera/depth"][()], depth)
            assert handle["test_camera/camera/depth"].compression == "gzip" and handle["test_camera/camera/depth"].chunks
            assert handle.attrs["group"] == item.split("__")[0]
        if item.startswith("train"):
            train_tracks.append(tracks.reshape(-1, 3))
            train_keypoints.append(keypoints.reshape(-1, 3))
    stats = yaml.safe_load((merged / "normalization_stats.yaml").read_text())["arrays"]
    for name, values in (("test_tracker/tracks/tracks", train_tracks), ("test_hands/hands/keypoints", train_keypoints)):
        flat = np.concatenate(values).astype(np.float64)
        assert stats[name]["count"] == len(flat)
        np.testing.assert_allclose(stats[name]["mean"], flat.mean(axis=0), rtol=1e-9)
        np.testing.assert_allclose(stats[name]["std"], flat.std(axis=0), rtol=1e-9)

    # An item without a stage's output is listed, and packaged only with allow_partial.
    removed = checkpoint_of(runs / "test_hands", "train__clip1", "hands")
    for file in removed.iterdir():
        file.unlink()
    removed.rmdir()
    with pytest.raises(ConfigError, match="1 of 5 items lack stage outputs"):
        package(runs / "test_hands", merged, PackageHDF5())
    status = json.loads((merged / "packaging_status.json").read_text())
    assert list(status["missing"]) == ["train__clip1"] and "test_hands" in status["missing"]["train__clip1"][0]
    written = package(runs / "test_hands", tmp_path / "partial", PackageHDF5(), allow_partial=True)
    assert sorted(p.name for p in written if p.suffix == ".h5") == sorted(f"{i}.h5" for i in items if i != "train__clip1")


@pytest.mark.parametrize("tool, reason", [
    (["{python}", "exit_nonzero.py"], r"tool exited with status 3.*unexpected keys"),
    (["{python}", "truncating.py", "--out", "{output}"], r"exited 0 but output 'tracks' is unusable.*truncated"),
    (["{python}", "slow.py"], r"timed out after"),
])
def test_failures_are_recorded_with_reasons_and_the_shard_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 tool: list[str], reason: str) -> None:
    root = tmp_path / "videos"
    make_videos(root, train=2, val=0)
    use_tools(monkeypatch, tmp_path / "out")
    done = launch("run.py", "stage=test_tool", *video_overrides(root), "cluster=debug", "stage.command=[" + ",".join(f"'{part}'" for part in tool) + "]",
                  "stage.timeout_s=2", "max_attempts=1", check=False)
    assert done.returncode == 1  # items left undone
    run_dir = tmp_path / "out" / "video" / "test_tool"
    errors = _errors(run_dir)
    assert sorted(e["item"] for e in errors) == ["train__clip0", "train__clip1"]  # both tried: one failure stops nothing
    for error in errors:
        assert error["error"].startswith("ToolError") and re.search(reason, error["error"], re.DOTALL), error
    assert not list((run_dir / "checkpoints").rglob("*.tracks"))  # nothing half-done was moved into place
    assert not any((run_dir / "scratch").iterdir()) if (run_dir / "scratch").exists() else True


def test_missing_upstream_run_is_a_config_error_before_anything_runs(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "videos"
    make_videos(root, train=1, val=0)
    use_tools(monkeypatch, tmp_path / "out")
    done = launch("run.py", "stage=test_tracker", *video_overrides(root), "cluster=debug", check=False)
    assert done.returncode == 2 and "depends_on.camera" in done.stderr and "launch that stage first" in done.stderr
    assert "Traceback" not in done.stderr


def test_example_pipeline_configs_compose_and_name_what_to_fill_in() -> None:
    from shardprep.runtime.build import build_stage
    from shardprep.runtime.config import load_config

    pipeline = load_config(["+pipeline=vipe_tapip3d_wilor"])["pipeline"]
    merge = load_config(["+merge=external_wilor"])["merge"]
    assert merge["stats"][0].split("/")[0] == pipeline["stages"][0]
    for index, stage in enumerate(pipeline["stages"]):
        built = build_stage(load_config(["dataset=video", "dataset.root=/data/videos", f"stage={stage}"]))
        assert [u.name for u in built.upstreams] == pipeline["stages"][index - 1:index]  # each reads the one before
        with pytest.raises(ConfigError, match=r"stage.cwd=/path/to/"):
            built.validate()  # the placeholder paths: the first thing a user is told to fill in


class _FakeNvml:
    """NVML's four calls that NvmlMemory makes, answering from `usage` (pid -> MiB): no GPU here."""

    def __init__(self) -> None:
        self.usage: dict[int, float] = {}

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int):
        return type("Memory", (), {"free": 80_000 * 2**20})()

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int):
        return [type("Process", (), {"pid": pid, "usedGpuMemory": int(mb * 2**20)})() for pid, mb in
                list(self.usage.items())]


def test_nvml_peak_counts_every_process_of_the_tool_session_and_nothing_else(tmp_path: Path) -> None:
    nvml = _FakeNvml()
    memory = NvmlMemory(0, nvml=nvml)
    child_pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(1.5)']); open({str(child_pid_file)!r}, 'w').write(str(child.pid)); child.wait()")
    command = Command.from_config(["{python}", "-c", script], python_env=sys.prefix)

    pids: list[int] = []

    def on_start(pid: int) -> None:
        pids.append(pid)
        memory.start(pid)
        threading.Thread(target=feed, daemon=True).start()

    def feed() -> None:
        while not child_pid_file.exists() or not child_pid_file.read_text():
            time.sleep(0.05)
        nvml.usage = {int(child_pid_file.read_text()): 1500.0, os.getpid(): 9999.0}  # the tool's child; and us

    outcome = run(command, command.argv({}), tmp_path / "log", on_start=on_start)
    assert outcome.ok
    assert memory.finish(pids[0], outcome.log) == pytest.approx(1500.0)
    assert memory.free_mb() == 80_000


def test_an_invalid_output_folder_is_redone_and_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "videos"
    make_videos(root, train=2, val=0)
    use_tools(monkeypatch, tmp_path / "out")
    overrides = ["stage=test_camera", *video_overrides(root), "cluster=debug"]
    launch("run.py", *overrides)
    run_dir = tmp_path / "out" / "video" / "test_camera"
    broken, kept = (checkpoint_of(run_dir, f"train__clip{i}", "camera") for i in range(2))
    pids = {path.name: json.loads((path / "meta.json").read_text())["pid"] for path in (broken, kept)}
    with open(broken / "depth.npy", "r+b") as handle:  # as if the disk filled after the rename
        handle.truncate(200)
    launch("run.py", *overrides)
    np.testing.assert_array_equal(np.load(broken / "depth.npy"),
                                  1 + np.load(root / "train" / "clip0.npy").astype(np.float32).mean(-1) / 255)
    assert json.loads((broken / "meta.json").read_text())["pid"] != pids[broken.name]  # redone, folder replaced
    assert json.loads((kept / "meta.json").read_text())["pid"] == pids[kept.name]  # the valid one left alone


def test_a_bad_stage_anywhere_in_the_pipeline_submits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "videos"
    make_videos(root, train=1, val=0)
    use_tools(monkeypatch, tmp_path / "out")
    done = launch("pipeline.py", "pipeline=test_chain", *video_overrides(root), "cluster=debug",
                  "test_hands:stage.command=['{python}','hands.py','{bogus}']", check=False)
    assert done.returncode == 2 and "unknown placeholder(s) ['bogus']" in done.stderr
    assert not list((tmp_path / "out").rglob("submissions.jsonl"))  # not even the first stage was submitted
    done = launch("pipeline.py", "pipeline=test_chain", *video_overrides(root), "nope:stage.x=1", check=False)
    assert done.returncode == 2 and "'nope' is not a stage of this pipeline" in done.stderr


def test_redoing_an_upstream_run_under_other_settings_makes_the_downstream_run_refuse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The downstream fingerprint holds the upstream run's: its old outputs are never taken as done after the
    upstream was redone under other settings; force=true redoes them."""
    root = tmp_path / "videos"
    make_videos(root, train=1, val=0)
    use_tools(monkeypatch, tmp_path / "out")
    common = [*video_overrides(root), "cluster=debug"]
    launch("run.py", "stage=test_camera", *common)
    launch("run.py", "stage=test_tracker", *common)
    launch("run.py", "stage=test_tracker", *common)  # same upstream: resumes as before
    launch("run.py", "stage=test_camera", "stage.options.sleep=0.01", "force=true", *common)
    done = launch("run.py", "stage=test_tracker", *common, check=False)
    assert done.returncode == 2 and re.search(r"changed: upstream run \w+ \(redone: fingerprint \w+ -> \w+\)",
                                              done.stderr), done.stderr
    launch("run.py", "stage=test_tracker", "force=true", *common)


def test_torch_peak_runs_the_tools_script_as_python_would(tmp_path: Path) -> None:
    """`{torch_peak} run.py args`: the tool's folder first on sys.path (its `utils`, and an `outputs` module that
    also exists beside the runner), its argv, `__main__`, its exit status; no peak line when CUDA was not used."""
    tool = tmp_path / "tool"
    (tool / "utils").mkdir(parents=True)
    (tool / "utils" / "__init__.py").write_text("NAME = 'the tool utils'\n")
    (tool / "outputs.py").write_text("WHO = 'the tool outputs'\n")
    (tool / "run.py").write_text("import sys, utils, outputs\n"
                                 "print('RAN', sys.argv, __name__, utils.NAME, outputs.WHO)\n"
                                 "sys.exit(int(sys.argv[1]))\n")
    command = Command.from_config(["{python}", "{torch_peak}", "run.py", "{code}"], cwd=str(tool),
                                  python_env=sys.prefix)
    for code in (0, 3):
        log = tmp_path / f"{code}.log"
        outcome = run(command, command.argv({"torch_peak": str(TORCH_PEAK), "code": code}), log)
        assert outcome.returncode == code
        text = log.read_text()
        assert f"RAN ['run.py', '{code}'] __main__ the tool utils the tool outputs" in text, text
        assert "SHARDPREP_PEAK_MEMORY_MB" not in text and reported_peak(log) is None
