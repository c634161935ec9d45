"""The command line: Hydra's own flags on every launcher, unknown keys refused, the `shardprep` console script, and
the one-line refusals before submission (each asserts that nothing was written, so nothing could be submitted)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, SLURM_TEST_CLUSTER, launch

LAUNCHERS = ["depth.py", "events.py", "run.py", "status.py", "merge.py", "split.py", "pipeline.py", "report.py"]
LOG_LINE = re.compile(r"^  (?:logs:)? +shard (\d+): (\S+) \(stderr: (\S+)\)$", re.M)


def shardprep(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console script's entry, as `pyproject.toml` declares it (`shardprep = shardprep.launch.command:main`)."""
    return subprocess.run([sys.executable, "-c", "from shardprep.launch.command import main; main()", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("script", LAUNCHERS)
def test_help_lists_groups_and_keys_on_every_launcher(script: str) -> None:
    done = launch(script, "--help")
    assert "== Config groups" in done.stdout
    assert "dataset: 3dhp, 3dpw, demo, dsec" in done.stdout
    assert "\nshards: 1\n" in done.stdout and "out_dir:" in done.stdout


@pytest.mark.parametrize("script", LAUNCHERS)
def test_cfg_job_prints_the_composed_config(script: str) -> None:
    done = launch(script, "--cfg", "job", "shards=3", "--package", "shards")
    assert done.stdout.strip() == "3"


def test_stage_launcher_config_has_its_stage() -> None:
    assert launch("depth.py", "--cfg", "job", "--package", "stage.name").stdout.strip() == "depth"
    assert launch("events.py", "--cfg", "job", "--package", "stage.name").stdout.strip() == "events"


def test_cfg_hydra_info_and_shell_completion() -> None:
    assert "hydra:" in launch("depth.py", "--cfg", "hydra").stdout
    assert "Defaults List" in launch("depth.py", "--info", "defaults").stdout
    assert "complete -o nospace -o default -F hydra_bash_completion" in launch(
        "depth.py", "--shell-completion", "install=bash").stdout


def test_shell_completion_query_completes_groups() -> None:
    done = subprocess.run([sys.executable, str(REPO / "launch" / "depth.py"), "-sc", "query=bash"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COMP_LINE": "python launch/depth.py data"})
    assert done.returncode == 0, done.stderr
    assert "dataset=" in done.stdout.split()


@pytest.mark.parametrize(("override", "closest"), [
    ("shard=20", "shards"), ("+shard=20", "shards"), ("cluster.partiton=gpu", "cluster.partition"),
    ("+stage.bin=8", "stage.bins"), ("+cluster.partiton=gpu", "cluster.partition"),
])
def test_unknown_key_is_refused_naming_the_closest(override: str, closest: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = launch("run.py", "stage=image_stats", override, f"out_dir={out}", check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert f"did you mean {closest}?" in done.stderr and override in done.stderr
    assert not out.exists()


def test_unknown_key_refused_with_hydra_flags_too() -> None:
    done = launch("depth.py", "--cfg", "job", "shard=2", check=False)
    assert done.returncode == 2 and "did you mean shards?" in done.stderr


def test_keys_a_config_leaves_room_for_are_accepted() -> None:
    from shardprep.runtime.config import load_config

    config = load_config(["+cluster.additional.reservation=r1", "+pipeline=vipe_tapip3d_wilor"])
    assert config["cluster"]["additional"] == {"reservation": "r1"} and config["pipeline"]["stages"]
    # `bins` is a parameter of the image_stats stage's _target_: added back after a deletion, it is accepted.
    config = load_config(["stage=image_stats", "~stage.bins", "+stage.bins=8"])
    assert config["stage"]["bins"] == 8


def test_unknown_option_is_refused() -> None:
    done = launch("depth.py", "--bogus", check=False)
    assert done.returncode == 2 and "--bogus: not an option" in done.stderr


def test_run_without_stage_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(REPO / "launch" / "run.py"), f"out_dir={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # not `launch`, which names a stage
    assert done.returncode == 2
    assert "name the stage to run: stage=<" in done.stderr and "image_stats" in done.stderr
    assert not out.exists()


def test_events_on_a_dataset_without_clips_is_refused(tmp_path: Path, demo_root: Path) -> None:
    out = tmp_path / "run"
    done = launch("events.py", f"out_dir={out}", demo_root=demo_root, check=False)
    assert done.returncode == 2
    assert "stage 'events' needs items with clip, which dataset 'demo' does not give" in done.stderr
    assert not out.exists()


def depth_launch(out: Path, checkpoint: Path, demo_root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return launch("depth.py", "cluster=local", f"out_dir={out}", f"stage.detector.checkpoint={checkpoint}",
                  f"stage.pose.checkpoint={checkpoint}", "stage.depth.model=random:small", demo_root=demo_root,
                  check=False)


def test_empty_model_folder_is_refused(tmp_path: Path, demo_root: Path) -> None:
    model = tmp_path / "depth_model"
    model.mkdir()
    out = tmp_path / "run"
    done = launch("depth.py", "stage=depth_demo", "cluster=local", f"out_dir={out}", f"stage.depth.model={model}",
                  demo_root=demo_root, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"shardprep: error: stage.depth.model={model}: the folder is empty")
    (model / "config.json").write_text("{}")
    done = launch("depth.py", "stage=depth_demo", "cluster=local", f"out_dir={out}", f"stage.depth.model={model}",
                  demo_root=demo_root, check=False)
    assert done.returncode == 2 and "config.json but no weights" in done.stderr
    assert not out.exists()


def test_empty_checkpoint_is_refused(tmp_path: Path, demo_root: Path) -> None:
    empty = tmp_path / "rtmdet.pth"
    empty.touch()
    out = tmp_path / "run"
    done = depth_launch(out, empty, demo_root, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"shardprep: error: {empty}: the file is empty (0 bytes); download or copy it again"
    assert not out.exists()


def test_checkpoint_that_is_no_torch_file_is_refused(tmp_path: Path, demo_root: Path) -> None:
    html = tmp_path / "rtmdet.pth"
    html.write_text("<html>404 Not Found</html>")  # what a failed download through a proxy leaves
    out = tmp_path / "run"
    done = depth_launch(out, html, demo_root, tmp_path)
    assert done.returncode == 2 and "not a PyTorch checkpoint" in done.stderr
    assert not out.exists()


def test_header_check_accepts_what_torch_save_writes(tmp_path: Path) -> None:
    from shardprep.runtime.model_files import header_problem

    modern, legacy = tmp_path / "modern.pth", tmp_path / "legacy.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, modern)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, legacy, _use_new_zipfile_serialization=False)
    assert header_problem(modern) is None and header_problem(legacy) is None


def test_header_check_of_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from shardprep.runtime.model_files import header_problem

    good, cut = tmp_path / "model.safetensors", tmp_path / "cut.safetensors"
    save_file({"w": torch.zeros(4)}, str(good))
    cut.write_bytes(good.read_bytes()[:12])
    assert header_problem(good) is None
    assert "header length past the end" in header_problem(cut)


def test_console_script_commands() -> None:
    listing = shardprep()
    assert listing.returncode == 2 and "commands:" in listing.stdout and "depth" in listing.stdout
    assert shardprep("depth", "--cfg", "job", "--package", "stage.name").stdout.strip() == "depth"
    assert "== Config groups" in shardprep("status", "--help").stdout
    assert "== Config groups" in shardprep("merge", "--help").stdout
    refused = shardprep("depht")
    assert refused.returncode == 2 and "'depht' is not a command" in refused.stderr
    typo = shardprep("depth", "+shard=2")
    assert typo.returncode == 2 and "did you mean shards?" in typo.stderr


def test_console_script_is_declared() -> None:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"shardprep": "shardprep.launch.command:main"}


def printed_logs(stdout: str) -> dict[int, tuple[Path, Path]]:
    return {int(shard): (Path(out), Path(out).with_name(err)) for shard, out, err in LOG_LINE.findall(stdout)}


@pytest.mark.parametrize("backend", ["local", "debug"])
def test_printed_log_files_are_the_files_written(tmp_path: Path, demo_root: Path, backend: str) -> None:
    run_dir = tmp_path / "run"
    done = launch("run.py", f"cluster={backend}", "shards=2", f"out_dir={run_dir}", demo_root=demo_root)
    logs = printed_logs(done.stdout)
    assert sorted(logs) == [0, 1], done.stdout
    for out, err in logs.values():
        assert out.parent == run_dir / "logs" and out.is_file() and err.is_file()
    assert len({out for out, _ in logs.values()}) == 2  # one per shard


def test_printed_status_command_runs_for_a_stage_of_an_extra_search_path(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from external_helpers import make_videos, use_tools, video_overrides

    root = tmp_path / "videos"
    make_videos(root, train=1, val=0)
    use_tools(monkeypatch, tmp_path / "out")
    done = launch("run.py", "stage=test_camera", *video_overrides(root), "cluster=debug")
    (command,) = re.findall(r"^  progress: (.+)$", done.stdout, flags=re.M)
    assert "stage=" not in command  # tests/conf's stage would not compose without its search path
    program, script, *overrides = shlex.split(command)
    assert (program, script) == ("python", "launch/status.py")
    status = launch("status.py", *overrides)
    assert "total  1      1     0       0" in status.stdout


@pytest.mark.slurm
def test_printed_slurm_logs_and_merge_log_are_written(slurm, tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    done = launch("run.py", "shards=2", "merge_after=true", f"out_dir={run_dir}", *SLURM_TEST_CLUSTER,
                  demo_root=demo_root)
    logs = printed_logs(done.stdout)
    assert sorted(logs) == [0, 1], done.stdout
    for out, err in logs.values():
        assert out.is_file() and err.is_file() and out.parent.parent == run_dir / "logs"
    (merge_out, merge_err), = re.findall(r"^submitted merge job \S+: .*; log: (\S+) \(stderr: (\S+)\)$",
                                          done.stdout, flags=re.M)
    assert Path(merge_out).is_file() and Path(merge_out).with_name(merge_err).is_file()
