"""The convert stage on Human3.6M as the release's .tgz archives (tests/data/raw_h36m.py `pack_release_archives`:
real gzip tar files holding the raw tree under the release's member paths): the same converted bytes as from the
extracted tree, nothing extracted by the user, a damaged archive recorded per video, a missing one refused before
submission, extracted files preferred over archives (said once)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import launch
from data.raw_h36m import CAMERAS, pack_release_archives, write_raw_h36m


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raw_h36m(tmp_path_factory.mktemp("raw_h36m") / "raw", subjects=["S1", "S9"])


@pytest.fixture(scope="module")
def archives(raw: Path) -> Path:
    return pack_release_archives(raw, raw.parent / "archives", subjects=["S1", "S9"])


SUBJECTS = ("dataset.subjects.train=[S1]", "dataset.subjects.test=[S9]")


def convert(root: Path, run: Path, *extra: str, check: bool = True):
    return launch("convert.py", "dataset=h36m", f"raw_root={root}", f"out_dir={run}", "cluster=local", *SUBJECTS,
                  *extra, check=check)


def convert_and_merge(root: Path, base: Path) -> Path:
    convert(root, base / "run", "shards=2")
    launch("merge.py", "dataset=h36m", "stage=convert", f"out_dir={base / 'run'}", f"merged_dir={base / 'h36m'}")
    return base / "h36m"


def test_archives_convert_to_the_same_bytes_as_the_extracted_tree(raw: Path, archives: Path, tmp_path: Path) -> None:
    assert not any(path.is_dir() for path in archives.iterdir())  # nothing extracted
    from_tree = convert_and_merge(raw, tmp_path / "tree")
    from_archives = convert_and_merge(archives, tmp_path / "archives")
    files = sorted(path.relative_to(from_tree) for path in from_tree.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(from_archives) for path in from_archives.rglob("*") if path.is_file())
    assert len([f for f in files if f.suffix == ".jpg"]) == 2 * 4 * 3  # 2 subjects x 4 cameras, 3 frames each
    for relative in files:
        if relative.suffix == ".npz":
            ours, theirs = np.load(from_archives / relative), np.load(from_tree / relative)
            assert ours.files == theirs.files
            for key in theirs.files:
                assert ours[key].dtype == theirs[key].dtype
                np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{relative} {key}")
        elif relative.suffix == ".jpg":
            np.testing.assert_array_equal(np.asarray(Image.open(from_archives / relative)),
                                          np.asarray(Image.open(from_tree / relative)), err_msg=str(relative))
        assert (from_archives / relative).read_bytes() == (from_tree / relative).read_bytes(), relative


def test_a_cut_archive_fails_the_videos_it_lost_naming_archive_and_member(archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "cut"
    shutil.copytree(archives, root)
    videos = root / "Videos_S9.tgz"
    videos.write_bytes(videos.read_bytes()[: videos.stat().st_size // 2])
    run = tmp_path / "run"
    done = convert(root, run, "max_attempts=1", check=False)
    assert done.returncode == 1, done.stderr
    errors = json.loads(launch("status.py", "dataset=h36m", "stage=convert", f"out_dir={run}", "errors=true",
                               "output=json").stdout)
    assert errors and all(record["item"].startswith("S9_") for record in errors)  # S1's 4 videos converted
    for record in errors:
        member = f"S9/Videos/{record['item'][3:].replace('_', ' ', 1)}.mp4"
        assert str(videos) in record["error"] and member in record["error"], record
    progress = [json.loads(path.read_text()) for path in (run / "progress").glob("shard-*.json")]
    assert sum(p["attempts"][-1]["processed"] for p in progress) == 8 - len(errors)


def test_a_missing_archive_is_refused_before_submission(archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "partial"
    shutil.copytree(archives, root)
    (root / "Poses_D3_Positions_mono_S9.tgz").unlink()
    done = convert(root, tmp_path / "run", check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "S9" in lines[0] and "Poses_D3_Positions_mono_S9.tgz" in lines[0], done.stderr
    assert not (tmp_path / "run").exists()


def test_extracted_files_win_over_archives_said_once(raw: Path, archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "both"
    shutil.copytree(archives, root)
    shutil.copytree(raw / "S1", root / "S1")
    (root / "Videos_S1.tgz").write_bytes(b"not an archive")  # never read: S1's extracted videos are used
    done = convert(root, tmp_path / "run")
    said = [line for line in (done.stdout + done.stderr).splitlines() if "the extracted files are used" in line]
    assert len(said) == 1 and "3 parts" in said[0], done.stdout + done.stderr
    frames = tmp_path / "run" / "checkpoints" / "shard-00000" / f"S1_Directions_1.{CAMERAS[0]}.frames"
    assert len(list(frames.glob("*.jpg"))) == 3
