"""The runtime on one machine (cluster=local / debug): resume, bad items, bad configs, status.

The same behaviour on the real SLURM cluster is tested in test_runtime_slurm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import launch

from shardprep.runtime.npz import read_npz
from shardprep.runtime.run_folder import RunFolder


def checkpoint_files(run_dir: Path) -> dict[str, Path]:
    return {path.name: path for path in sorted((run_dir / "checkpoints").rglob("*")) if path.is_file()}


def status_json(run_dir: Path, *overrides: str) -> dict:
    return json.loads(launch("status.py", f"out_dir={run_dir}", "output=json", *overrides).stdout)


def test_demo_run_then_resume_redoes_only_missing_and_invalid(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    command = ("run.py", "shards=2", "cluster=local", f"out_dir={run_dir}")
    launch(*command, demo_root=demo_root)
    files = checkpoint_files(run_dir)
    assert len(files) == 12

    removed = sorted(files)[:3]
    for name in removed:
        files[name].unlink()
    truncated = sorted(files)[-1]
    files[truncated].write_bytes(files[truncated].read_bytes()[:64])
    untouched = {name: path.stat().st_mtime_ns for name, path in files.items() if name not in [*removed, truncated]}

    launch(*command, demo_root=demo_root)
    after = checkpoint_files(run_dir)
    assert sorted(after) == sorted(files)
    assert {name: after[name].stat().st_mtime_ns for name in untouched} == untouched
    redone = sum(RunFolder(run_dir).progress(shard).attempts[-1].processed for shard in (0, 1))
    assert redone == 4
    for path in after.values():
        assert read_npz(path)["histogram"].shape == (3, 16)
    totals = status_json(run_dir)["totals"]
    assert totals == {"items": 12, "done": 12, "failed": 0, "todo": 0}


def test_local_and_debug_backends_agree(tmp_path: Path, demo_root: Path) -> None:
    launch("run.py", "shards=3", "cluster=local", f"out_dir={tmp_path / 'local'}", demo_root=demo_root)
    launch("run.py", "shards=1", "cluster=debug", f"out_dir={tmp_path / 'debug'}", demo_root=demo_root)
    local, debug = checkpoint_files(tmp_path / "local"), checkpoint_files(tmp_path / "debug")
    assert sorted(local) == sorted(debug)
    for name in local:
        a, b = read_npz(local[name]), read_npz(debug[name])
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_frame_is_recorded_and_the_shard_goes_on(tmp_path: Path, own_demo: Path) -> None:
    root = own_demo
    bad = sorted(root.rglob("*.jpg"))[4]
    bad.write_bytes(b"not a jpeg")
    run_dir = tmp_path / "run"
    command = ("run.py", "cluster=debug", "max_attempts=2", f"out_dir={run_dir}")
    for attempt in (1, 2, 3):
        done = launch(*command, demo_root=root, check=False)
        assert done.returncode == 1, done.stderr
    assert len(checkpoint_files(run_dir)) == 11
    status = status_json(run_dir)
    assert status["totals"] == {"items": 12, "done": 11, "failed": 1, "todo": 0}  # each item counted once
    assert bad.name in status["shards"][0]["last_error"] and "cannot decode image" in status["shards"][0]["last_error"]
    # Two failed attempts, then the item is no longer tried (max_attempts=2).
    attempts = RunFolder(run_dir).progress(0).attempts
    assert [a.todo for a in attempts] == [12, 1, 0]
    errors = [json.loads(line) for line in (run_dir / "errors" / "shard-00000.jsonl").read_text().splitlines()]
    assert [e["attempt"] for e in errors] == [1, 2] and "Traceback" in errors[0]["traceback"]


def _refused(run_dir: Path, *overrides: str, demo_root: Path) -> str:
    before = len(RunFolder(run_dir).submissions()) if run_dir.exists() else 0
    done = launch("run.py", "cluster=debug", *overrides, demo_root=demo_root, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shardprep: error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert (len(RunFolder(run_dir).submissions()) if run_dir.exists() else 0) == before
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("dataset=no_such_dataset",), "Could not find 'dataset/no_such_dataset'"),
        (("shards=0",), "shards=0"),
        (("shards=13",), "only 12 items"),
        (("shards=two",), "shards"),
        (("out_dir=/proc/not_writable",), "not writable"),
        (("dataset=h36m", "dataset.root=/no/such/h36m"), "/no/such/h36m"),
        (("cluster.backend=pbs",), "cluster.backend"),
    ],
)
def test_bad_config_fails_before_submission(tmp_path: Path, demo_root: Path, overrides, expected) -> None:
    args = overrides if any(o.startswith("out_dir=") for o in overrides) else (*overrides, f"out_dir={tmp_path}/run")
    assert expected in _refused(tmp_path / "run", *args, demo_root=demo_root)


def test_fingerprint_refusal_names_a_file_whose_content_changed(tmp_path: Path, own_demo: Path) -> None:
    from shardprep.datasets.demo import ANNOTATION
    from shardprep.runtime.npz import write_npz

    run_dir = tmp_path / "run"
    launch("run.py", "cluster=debug", f"out_dir={run_dir}", demo_root=own_demo)
    (annotation,) = own_demo.glob(f"*/{ANNOTATION}")
    with np.load(annotation, allow_pickle=False) as data:
        arrays = {key: data[key].copy() for key in data.files}
    arrays["scale"][0] *= 1.1  # same items, other content
    write_npz(annotation, arrays)
    message = _refused(run_dir, f"out_dir={run_dir}", demo_root=own_demo)
    assert f"changed: content of {annotation}." in message


def test_existing_run_refuses_other_fingerprint_or_shard_count(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    launch("run.py", "cluster=debug", "shards=2", f"out_dir={run_dir}", demo_root=demo_root)
    message = _refused(run_dir, "shards=2", "stage.bins=8", f"out_dir={run_dir}", demo_root=demo_root)
    assert "fingerprint" in message and "force=true" in message
    assert "changed: stage.bins: 16 -> 8." in message  # names the key, with both values
    assert "shards=2" in _refused(run_dir, "shards=3", f"out_dir={run_dir}", demo_root=demo_root)
    # force=true accepts the new settings and redoes every item made under the old ones.
    launch("run.py", "cluster=debug", "shards=2", "stage.bins=8", "force=true", f"out_dir={run_dir}", demo_root=demo_root)
    assert sum(RunFolder(run_dir).progress(s).attempts[-1].processed for s in (0, 1)) == 12
    assert all(read_npz(p)["histogram"].shape == (3, 8) for p in checkpoint_files(run_dir).values())
