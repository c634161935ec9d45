"""`launch/pipeline.py pipeline=depth_from_raw`: a raw Human3.6M (tests/data/raw_h36m.py, written the way the release
is) through convert -> merge -> depth (random-weight `depth_demo`) -> merge -> split by one command, on the real SLURM
cluster (afterok chain, the depth run prepared by a job after the convert merge) and locally; its split files equal
those of the step-by-step commands; a bad depth setting submits nothing; re-running resumes without redoing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SLURM_TEST_CLUSTER, launch

from data.raw_h36m import write_raw_h36m
from shardprep.runtime.npz import read_npz

SUBJECTS = "dataset.subjects={train:[S1],test:[S9]}"
SPLIT_FILES = ["h36m_xycd_test.npz", "h36m_xycd_test_dets.npy", "h36m_xycd_train.npz", "h36m_xycd_train_dets.npy"]
# Per-file provenance: which hosts and code made the run, not what it computed.
PROVENANCE = ("environments",)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two subjects (one per subset), 4 cameras, 6 pose frames: 8 videos, 16 frames at the default sample rate."""
    return write_raw_h36m(tmp_path_factory.mktemp("raw") / "raw", frames=6, subjects=["S1", "S9"])


def chain(raw: Path, base: Path, *extra: str) -> tuple[str, ...]:
    return ("pipeline=depth_from_raw", "dataset=h36m", f"raw_root={raw}", SUBJECTS, "pipeline.stages=[depth_demo]",
            "shards=2", f"convert:out_dir={base / 'convert'}", f"depth_demo:out_dir={base / 'depth'}", *extra)


def split_arrays(merged: Path) -> dict[str, dict[str, np.ndarray]]:
    assert sorted(p.name for p in merged.glob("h36m_xycd_*")) == SPLIT_FILES
    return {name: read_npz(merged / name) if name.endswith(".npz") else {"dets": np.load(merged / name)}
            for name in SPLIT_FILES}


def assert_same_split(ours: Path, reference: dict[str, dict[str, np.ndarray]]) -> None:
    arrays = split_arrays(ours)
    for name, expected in reference.items():
        assert sorted(arrays[name]) == sorted(expected), name
        for key, value in expected.items():
            if key not in PROVENANCE:
                np.testing.assert_array_equal(arrays[name][key], value, err_msg=f"{name} {key}")


@pytest.fixture(scope="module")
def step_by_step(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """The split files of the commands of docs/convert.md, one after the other (local processes, one thread each as
    the SLURM tasks of one CPU: the float sums of the models then add up in the same order)."""
    base = tmp_path_factory.mktemp("steps")
    convert, converted, depth = base / "convert", base / "h36m", base / "depth"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        launch("convert.py", "dataset=h36m", f"raw_root={raw}", SUBJECTS, "shards=2", "cluster=local",
               f"out_dir={convert}")
        launch("merge.py", "dataset=h36m", "stage=convert", f"out_dir={convert}", f"merged_dir={converted}")
        run = ("dataset=h36m", f"dataset.root={converted}", SUBJECTS, "stage=depth_demo", f"out_dir={depth}")
        launch("depth.py", *run, "shards=2", "cluster=local")
        launch("merge.py", *run)
        launch("split.py", *run)
    arrays = split_arrays(depth / "merged")
    assert len(arrays["h36m_xycd_train.npz"]["imgname"]) == len(arrays["h36m_xycd_test.npz"]["imgname"]) == 8
    return arrays


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()
            and "logs" not in path.parts and "progress" not in path.parts and path.name != "submissions.jsonl"
            and not path.name.startswith(".")}


def _jobs(stdout: str) -> list[str]:
    return [line.split()[3].rstrip(":") for line in stdout.splitlines() if line.startswith("submitted ")]


def _sacct(job: str) -> list[tuple[str, str, str]]:
    shown = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "--format=Start,End,State"], capture_output=True,
                           text=True, check=True).stdout
    return [tuple(line.split("|")) for line in shown.splitlines() if line]


@pytest.mark.slurm
def test_chain_on_slurm_equals_the_step_by_step_commands_and_resumes(slurm: None, raw: Path, tmp_path: Path,
                                                                    step_by_step: dict) -> None:
    done = launch("pipeline.py", *chain(raw, tmp_path), *SLURM_TEST_CLUSTER)
    kinds = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("submitted ")]
    assert kinds == ["slurm", "merge", "prepare"], done.stdout  # the rest is queued by the prepare job
    assert "watch: squeue -j" in done.stdout and "stage=depth_demo" in done.stdout
    assert_same_split(tmp_path / "depth" / "merged", step_by_step)
    # The prepare job queued the depth array, its merge and the split; every job of the chain started after the one
    # before it ended, and each succeeded.
    jobs = _jobs(done.stdout)
    later = _jobs("".join(path.read_text() for path in (tmp_path / "depth" / "logs").glob("*/*_log.out")))
    assert len(later) == 3, later
    order = [*jobs, *later]
    for upstream, job in zip(order, order[1:]):
        assert {state for _, _, state in _sacct(job)} == {"COMPLETED"}, job
        assert min(start for start, _, _ in _sacct(job)) >= max(end for _, end, _ in _sacct(upstream))
    assert (tmp_path / "depth" / "logs" / jobs[2]).is_dir()  # the prepare job's log, in the depth run's logs

    before = {**_mtimes(tmp_path / "convert"), **_mtimes(tmp_path / "depth")}
    again = launch("pipeline.py", *chain(raw, tmp_path), *SLURM_TEST_CLUSTER)
    assert not _jobs(again.stdout), again.stdout  # nothing left to do: nothing submitted
    assert again.stdout.count("no array submitted") == 2 and again.stdout.count("not redone") == 3
    assert {**_mtimes(tmp_path / "convert"), **_mtimes(tmp_path / "depth")} == before  # no file rewritten


@pytest.mark.slurm
def test_a_chain_under_way_is_refused_naming_its_jobs(slurm: None, raw: Path, tmp_path: Path) -> None:
    no_wait = tuple(o for o in SLURM_TEST_CLUSTER if o != "wait=true")
    first = launch("pipeline.py", *chain(raw, tmp_path), *no_wait)
    jobs = _jobs(first.stdout)
    try:
        again = launch("pipeline.py", *chain(raw, tmp_path), *no_wait, check=False)
        assert again.returncode == 2 and "the chain is under way" in again.stderr, again.stderr
        named = re.search(r"\(scancel ([\d ]+)\)", again.stderr).group(1).split()
        assert named and set(named) <= set(jobs), (named, jobs)  # the chain's jobs still queued (the array may be done)
        assert not _jobs(again.stdout)
    finally:
        subprocess.run(["scancel", *jobs], check=False)


@pytest.mark.slurm
def test_a_bad_depth_setting_submits_nothing(slurm: None, raw: Path, tmp_path: Path) -> None:
    """Checked at launch although the depth run's files do not exist yet: the cluster request and the model."""
    for bad, said in (("depth_demo:cluster.partition=nope", "SLURM would never run this array"),
                      ("depth_demo:stage.depth.model=nowhere", "depth model 'nowhere'")):
        done = launch("pipeline.py", *chain(raw, tmp_path), *SLURM_TEST_CLUSTER, bad, check=False)
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not _jobs(done.stdout)
        assert not (tmp_path / "convert").exists() and not (tmp_path / "depth").exists()


def test_local_chain_equals_the_step_by_step_commands_and_resumes(raw: Path, tmp_path: Path, step_by_step: dict,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the step-by-step reference
    done = launch("pipeline.py", *chain(raw, tmp_path), "cluster=local")
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("submitted ")] == ["local"] * 2
    assert_same_split(tmp_path / "depth" / "merged", step_by_step)
    before = {**_mtimes(tmp_path / "convert"), **_mtimes(tmp_path / "depth")}
    again = launch("pipeline.py", *chain(raw, tmp_path), "cluster=local")
    assert not _jobs(again.stdout) and again.stdout.count("not redone") == 3, again.stdout
    assert {**_mtimes(tmp_path / "convert"), **_mtimes(tmp_path / "depth")} == before
