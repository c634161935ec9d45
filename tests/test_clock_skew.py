"""Freshness of file outputs with a node's clock minutes off (issue 14).

PNG/MP4/frame-folder outputs cannot carry the run's fingerprint: on resume they are taken only if newer than the
moment the fingerprint took effect. The launch that sets that moment runs here under libfaketime, its clock 10 minutes
ahead or behind (as a login node's can be); the files' mtimes come from the filesystem. The events stage runs
through the real launcher (cluster=debug: the task runs in the launching process, under the same skewed clock).
"""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from conftest import IN_CI, launch
from data.dsec_synthetic import make_dataset

from shardprep.runtime.run_folder import RunFolder

FILE_OUTPUTS = (".png", ".mp4", ".frames")


def file_outputs(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").glob("shard-*/*")
            if p.name.endswith(FILE_OUTPUTS)}


@pytest.fixture
def skewed_clock(monkeypatch: pytest.MonkeyPatch):
    """Set the clock of the launches that follow off by an offset such as "+10m" (libfaketime, Debian's faketime)."""
    library = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not library:
        message = "libfaketime is not installed (apt-get install faketime; tests/slurm/start-cluster.sh does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)

    def skew(offset: str) -> None:
        monkeypatch.setenv("LD_PRELOAD", library[0])
        monkeypatch.setenv("FAKETIME", offset)
        monkeypatch.setenv("FAKETIME_DONT_RESET", "1")

    yield skew


def run_events(root: Path, run_dir: Path, *overrides: str) -> None:
    launch("events.py", "dataset=dsec", f"dataset.root={root}", "dataset.durations_ms=[1000]", "~dataset.splits.test",
           "cluster=debug", "shards=1", f"out_dir={run_dir}", *overrides)


def processed(run_dir: Path) -> int:
    return RunFolder(run_dir).progress(0).attempts[-1].processed


def test_file_outputs_are_judged_by_the_filesystem_s_clock_not_the_launching_node_s(tmp_path: Path,
                                                                                    skewed_clock) -> None:
    root, run_dir = tmp_path / "dsec", tmp_path / "run"
    make_dataset(root)
    run_events(root, run_dir)
    items = RunFolder(run_dir).progress(0).attempts[-1].items
    first = file_outputs(run_dir)
    assert len(first) == 3 * items

    # Clock 10 minutes ahead: the new settings' files, written after the force, are fresh, not "older than it".
    skewed_clock("+10m")
    run_events(root, run_dir, "stage.crf=24", "force=true")
    assert processed(run_dir) == items
    second = file_outputs(run_dir)
    assert all(second[name] != first[name] for name in first)
    skewed_clock("+0")
    run_events(root, run_dir, "stage.crf=24")
    assert processed(run_dir) == 0 and file_outputs(run_dir) == second  # valid files are not redone

    # Clock 10 minutes behind: files of the previous settings, made minutes ago, are not taken as the new ones'.
    skewed_clock("-10m")
    run_events(root, run_dir, "stage.crf=25", "force=true")
    assert processed(run_dir) == items
    third = file_outputs(run_dir)
    assert all(third[name] != second[name] for name in second)
