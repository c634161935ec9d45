"""`status errors=true`: each failed item with its error and traceback, grouped by error, newest attempt first."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from conftest import launch


def test_failed_items_grouped_by_error_newest_first(tmp_path: Path, own_demo: Path) -> None:
    root = own_demo
    frames = sorted(root.rglob("*.jpg"))
    frames[2].write_bytes(b"not a jpeg")
    frames[7].write_bytes(b"")  # a different error: empty file
    run_dir = tmp_path / "run"
    command = ("run.py", "cluster=debug", "max_attempts=2", f"out_dir={run_dir}")
    for _ in (1, 2):
        assert launch(*command, demo_root=root, check=False).returncode == 1
    text = launch("status.py", f"out_dir={run_dir}", "errors=true").stdout
    assert text.startswith("2 failed item(s), ")
    groups = re.findall(r"^== (\d+) item\(s\): (.+)$", text, flags=re.M)
    assert len(groups) == 2 and all(count == "1" for count, _ in groups)
    assert {frames[2].stem, frames[7].stem} <= set(re.findall(r"^  (\S+)  attempt 2  ", text, flags=re.M))
    stamps = re.findall(r"attempt \d+  (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text)
    times = [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S") for stamp in stamps]
    assert times == sorted(times, reverse=True)
    assert text.count("newest traceback:") == 2 and "Traceback (most recent call last):" in text
    assert "\\n" not in text  # the traceback is unescaped, one line per line


def test_no_failures(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    launch("run.py", "cluster=debug", f"out_dir={run_dir}", demo_root=demo_root)
    assert launch("status.py", f"out_dir={run_dir}", "errors=true").stdout.strip() == "no failed items"
