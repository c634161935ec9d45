"""`launch/report.py`: the report folder of a real demo run, checked in a real headless Chromium (from Debian's
`chromium` package; install.sh installs it): no console errors, every image loads, one table row per shard, a
screenshot that is not blank. Without Chromium the browser tests skip and say why; in CI they fail."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import IN_CI, launch
from shardprep.runtime.run_folder import RunFolder
from shardprep.tests.browser.chromium import Browser, find_chromium

PREVIEWS = 2
IMAGES = "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
SHARD_ROWS = "Array.from(document.querySelectorAll('#shard-table tbody tr[data-key]')).map(r => r.dataset.key)"


@pytest.fixture(scope="session")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        message = "no Chromium on PATH: install Debian's `chromium` package (bash install.sh does, as root)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Path:
    """The README's demo run of the depth stage (random weights), in two shards, and its report."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    launch("depth.py", "dataset=demo", "stage=depth_demo", "cluster=debug", "shards=2", f"out_dir={run_dir}",
           demo_root=demo_root)
    done = launch("report.py", "dataset=demo", "stage=depth_demo", f"out_dir={run_dir}", f"n={PREVIEWS}",
                  demo_root=demo_root)
    # (mmengine prints its checkpoint loading to stdout before)
    assert done.stdout.strip().splitlines()[-1] == f"report: {run_dir / 'report' / 'index.html'}"
    return run_dir


def test_report_folder_is_self_contained(depth_run: Path) -> None:
    report = depth_run / "report"
    names = sorted(path.name for path in report.iterdir())
    assert names == ["depth-000.png", "depth-001.png", "index.html", "progress.png"]
    assert not [path for path in depth_run.iterdir() if path.name.startswith(".tmp-")]
    html = (report / "index.html").read_text()
    manifest = json.loads((depth_run / "manifest.json").read_text())
    assert manifest["fingerprint"] in html and manifest["code_version"] in html
    # The depth previews come with the depth map (the demo's models load here) and the stored depths read back.
    read_back = re.findall(r"max \|map at keypoints - depth_point\| \(m\)</td><td>([0-9.]+)<", html)
    # Same machine and precision as the run: the map as drawn gives the stored numbers.
    assert len(read_back) == PREVIEWS and all(float(value) < 1e-3 for value in read_back), read_back
    assert "no failed items" in html


def test_report_in_chromium(depth_run: Path, chromium: str, tmp_path: Path) -> None:
    with Browser(chromium) as browser:
        browser.open((depth_run / "report" / "index.html").as_uri())
        images = browser.evaluate(IMAGES)
        shards = browser.evaluate(SHARD_ROWS)
        errors = browser.console_errors()
        shot = browser.screenshot(tmp_path / "report.png")
    assert errors == []
    assert len(images) == 1 + PREVIEWS and all(loaded for _, loaded in images), images
    planned = json.loads((depth_run / "manifest.json").read_text())["plan"]
    assert shards == [str(shard) for shard in range(len(planned))] == ["0", "1"]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 1000 and pixels.std() > 20, (pixels.shape, pixels.std())


def test_chromium_check_sees_a_missing_image(depth_run: Path, chromium: str, tmp_path: Path) -> None:
    """The browser check above can fail: a report copied without one of its images is caught."""
    copy = tmp_path / "report"
    shutil.copytree(depth_run / "report", copy)
    (copy / "depth-001.png").unlink()
    with Browser(chromium) as browser:
        browser.open((copy / "index.html").as_uri())
        images = dict(browser.evaluate(IMAGES))
        errors = browser.console_errors()
    assert images["depth-001.png"] is False and images["depth-000.png"] is True
    assert any("depth-001.png" in error for error in errors), errors


def test_report_lists_failures_and_replaces_the_last_report(tmp_path: Path, own_demo: Path) -> None:
    frames = sorted(own_demo.rglob("*.jpg"))
    frames[3].write_bytes(b"not a jpeg")
    run_dir = tmp_path / "run"
    assert launch("run.py", "cluster=debug", "shards=2", "max_attempts=1", f"out_dir={run_dir}",
                  demo_root=own_demo, check=False).returncode == 1
    (run_dir / "report").mkdir()
    (run_dir / "report" / "old.png").write_bytes(b"left from an older report")
    launch("report.py", f"out_dir={run_dir}", "stage=image_stats", demo_root=own_demo)
    assert sorted(path.name for path in (run_dir / "report").iterdir()) == ["index.html", "progress.png"]
    html = (run_dir / "report" / "index.html").read_text()
    assert f"1 failed item(s), 1 distinct error(s)" in html
    assert frames[3].stem in html and "Traceback (most recent call last):" in html
    assert "stage &#x27;image_stats&#x27; has no preview" in html


def test_bad_n_is_refused(tmp_path: Path) -> None:
    done = launch("report.py", f"out_dir={tmp_path}", "n=-1", check=False)
    assert done.returncode == 2 and done.stderr.startswith("shardprep: error: n=-1:")
    assert not (tmp_path / "report").exists()


def test_events_previews_show_the_clip_window(tmp_path: Path, demo_root: Path) -> None:
    run_dir = tmp_path / "run"
    launch("events.py", "dataset=dsec_demo", "cluster=debug", f"out_dir={run_dir}", demo_root=demo_root)
    launch("report.py", "dataset=dsec_demo", "stage=events", f"out_dir={run_dir}", "n=2", demo_root=demo_root)
    report = run_dir / "report"
    assert sorted(path.name for path in report.glob("events-*.png")) == ["events-000.png", "events-001.png"]
    html = (report / "index.html").read_text()
    folder = RunFolder(run_dir)
    _, items = folder.checked_items(folder.manifest())  # the dataset's order
    ids = [item.id for item in items]
    assert len(list(run_dir.glob("checkpoints/*/*.events.npz"))) == len(ids)  # all complete
    first = np.load(next(run_dir.glob(f"checkpoints/*/{ids[0]}.events.npz")))
    assert re.findall(r"<h3>([^<]+)</h3>", html.split('id="previews"')[1]) == [ids[0], ids[-1]]  # evenly spaced
    assert f"<td>window start (µs)</td><td>{int(first['start_us'])}</td>" in html
    assert f"<td>events</td><td>{int(first['count'])}</td>" in html


def test_external_tool_previews_list_each_videos_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from external_helpers import make_videos, use_tools, video_overrides

    root = tmp_path / "videos"
    make_videos(root, train=2, val=0)
    use_tools(monkeypatch, tmp_path / "out")
    launch("run.py", "stage=test_camera", *video_overrides(root), "cluster=debug")
    launch("report.py", "stage=test_camera", *video_overrides(root))
    run_dir = tmp_path / "out" / "video" / "test_camera"
    html = (run_dir / "report" / "index.html").read_text()
    for item in ("train__clip0", "train__clip1"):
        poses = next(run_dir.glob(f"checkpoints/*/{item}.camera")) / "poses.npy"
        array = np.load(poses)
        assert f"<td>camera: {item}.camera/poses.npy</td><td>{poses.stat().st_size:,} bytes, {array.dtype} " \
               f"{tuple(array.shape)}</td>" in html
        assert f"<td>camera: {item}.camera/meta.json</td>" in html
