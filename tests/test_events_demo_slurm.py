"""`dataset=dsec_demo` on a fresh machine, as the README says: generated on first use, the events array through the
real SLURM cluster, then the merge's published folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import SLURM_TEST_CLUSTER, launch

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]


def test_dsec_demo_end_to_end_through_slurm(tmp_path: Path) -> None:
    demo, run_dir, merged = tmp_path / "demo", tmp_path / "run", tmp_path / "merged"
    launch("events.py", "dataset=dsec_demo", "shards=2", f"out_dir={run_dir}", *SLURM_TEST_CLUSTER, demo_root=demo)
    assert (demo / "dsec" / "v1" / "train" / "zurich_city_demo_a" / "events" / "left" / "events.h5").is_file()
    groups = launch("status.py", "dataset=dsec_demo", "stage=events", f"out_dir={run_dir}", "by=group",
                    demo_root=demo).stdout
    # 11 clips of 500 ms per sequence, 2 of them in the still stretch (no events) and skipped; 5 of 1 s
    assert re.search(r"train/500ms\s+9/9\s+9/9\s+9/9\s+9/9\s+9/9", groups), groups
    assert re.search(r"test/1s\s+5/5\s+5/5\s+5/5\s+5/5\s+5/5", groups), groups
    done = launch("merge.py", "dataset=dsec_demo", f"out_dir={run_dir}", f"merged_dir={merged}", demo_root=demo)
    assert re.search(r"dsec_demo_train_500ms\s+9\s+9\s+9\s+9\s+9", done.stdout), done.stdout
    entries = json.loads((merged / "dsec_demo_train_500ms" / "dsec_demo_train_500ms.json").read_text())
    assert [entry["id"].rsplit(".", 1)[1] for entry in entries] == [
        "00000", "00001", "00002", "00003", "00004", "00007", "00008", "00009", "00010"]
    # the first clip starts 30 ms before the event stream, the last ends 20 ms after it: flagged with their spans
    flagged = {entry["id"]: entry["covered_us"] for entry in entries if entry.get("partial")}
    assert flagged == {"train.500ms.zurich_city_demo_a.00000": [30_000, 500_000],
                       "train.500ms.zurich_city_demo_a.00010": [0, 480_000]}
    for entry in entries:
        for key in ("event_data", "video_data", "image"):
            assert (merged / "dsec_demo_train_500ms" / entry[key]).is_file()
    # status by=group prints the same completeness table, counted in the published folders
    (merged / "dsec_demo_test_1s" / "mp4" / "interlaken_demo_a" / "000002.mp4").unlink()
    groups = launch("status.py", "dataset=dsec_demo", "stage=events", f"out_dir={run_dir}", "by=group",
                    f"merged_dir={merged}", demo_root=demo).stdout
    assert re.search(r"dsec_demo_train_500ms\s+9\s+9\s+9\s+9\s+9", groups), groups
    assert re.search(r"dsec_demo_test_1s\s+5\s+5\s+5\s+4\s+5", groups), groups
