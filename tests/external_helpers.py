"""Shared by the external-stage tests: tiny synthetic videos, the stand-in tools' environment, config overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tests" / "tools"
TEST_CONF = f"hydra.searchpath=[file://{REPO / 'tests' / 'conf'}]"


def make_videos(root: Path, train: int = 3, val: int = 1, seed: int = 0) -> list[Path]:
    """`.npy` videos (frames, 6, 8, 3) uint8 under root/train and root/val; a different length per video."""
    rng = np.random.default_rng(seed)
    paths = []
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            path = root / split / f"clip{i}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, rng.integers(0, 255, (4 + i, 6, 8, 3), dtype=np.uint8))
            paths.append(path)
    return paths


def use_tools(monkeypatch: pytest.MonkeyPatch, output: Path) -> None:
    """Environment the test stage configs read (tests/conf/stage/test_*.yaml), and where runs go."""
    monkeypatch.setenv("SHARDPREP_TEST_TOOLS", str(TOOLS))
    monkeypatch.setenv("SHARDPREP_TEST_PYTHON_ENV", sys.prefix)
    monkeypatch.setenv("SHARDPREP_OUTPUT", str(output))


def video_overrides(root: Path) -> list[str]:
    return [TEST_CONF, "dataset=video", f"dataset.root={root}"]


def checkpoint_of(run_dir: Path, item: str, output: str) -> Path:
    """The one checkpoint of `item`'s `output` in the run, whichever shard holds it."""
    matches = list((run_dir / "checkpoints").glob(f"shard-*/{item}.{output}"))
    assert len(matches) == 1, matches
    return matches[0]
