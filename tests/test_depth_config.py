"""The depth stage's config checks: every problem is a one-line `ConfigError` before anything is submitted."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest
from conftest import launch

from shardprep.runtime.build import build_stage
from shardprep.runtime.config import load_config
from shardprep.runtime.errors import ConfigError
from shardprep.stages.depth.files import STACK, resolve_config

HAVE_STACK = all(importlib.util.find_spec(name) is not None for name in STACK)
needs_stack = pytest.mark.skipif(not HAVE_STACK, reason="model stack not installed (bash install.sh)")


def stage_with(tmp_path: Path, *overrides: str):
    (tmp_path / "da").mkdir(exist_ok=True)
    (tmp_path / "da" / "config.json").write_text("{}")
    # A safetensors file as the format defines it: the header's length (u64, little-endian), then the JSON header.
    (tmp_path / "da" / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    return build_stage(load_config(["stage=depth", "stage.detector.checkpoint=null", "stage.pose.checkpoint=null",
                                    f"stage.depth.model={tmp_path / 'da'}", *overrides]))


def test_checkpoints_and_depth_model_must_be_set(demo_root: Path, tmp_path: Path):
    done = launch("depth.py", "dataset=demo", f"out_dir={tmp_path / 'run'}", "cluster=debug", demo_root=demo_root,
                  check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "shardprep: error:" in done.stderr and "checkpoint" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(HAVE_STACK, reason="the model stack is installed")
def test_missing_stack_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="install.sh"):
        stage_with(tmp_path).validate()


@needs_stack
@pytest.mark.parametrize(("override", "message"), [
    ("stage.detector.kind=yolo", "stage.detector.kind='yolo'"),
    ("stage.precision=fp8", "stage.precision='fp8'"),
    ("stage.radius=-1", "stage.radius=-1"),
    ("stage.pose.checkpoint=/nowhere/rtmpose.pth", "model file not found: /nowhere/rtmpose.pth"),
    ("stage.pose.config=mmpose::no/such.py", "model file not found"),
    ("stage.depth.model=/nowhere/da", "depth model '/nowhere/da'"),
    ("stage.detector.config=mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "its head None is not supported"),
    ("stage.detector.config=mmdet::yolox/yolox_s_8xb8-300e_coco.py", "its head 'YOLOXHead' is not supported"),
])
def test_bad_stage_config(tmp_path: Path, override: str, message: str):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        stage = stage_with(tmp_path, override)
        stage.validate()


@needs_stack
def test_wheel_configs_resolve():
    for spec in ("mmdet::rtmdet/rtmdet_m_8xb32-300e_coco.py",
                 "mmpose::body_2d_keypoint/rtmpose/body8/rtmpose-l_8xb256-420e_body8-384x288.py"):
        assert resolve_config(spec).is_file()
