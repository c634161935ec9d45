"""Seeded random-weight models, for the demo and tests on a machine that cannot download weights.

`stage.depth.model=random:small` builds the V2-Small metric architecture (DINOv2 ViT-S/14 backbone, DPT head) with
seeded random weights, saves it once with `save_pretrained` under the user's cache, and the stage then loads it like
any other local model with `from_pretrained`: the real loading and inference path, meaningless numbers.

A null RTMDet / RTMPose checkpoint works the same way: the architecture of the config is built once under a fixed
seed and saved as an mmengine checkpoint named after the config's content, which the stage then loads through
`init_detector` / `init_model` like a downloaded one. Every process of every run thus holds the same weights (an
unseeded build differs per process, and so would every shard's outputs), and the file enters the run's fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardprep.runtime.atomic import create_folder_once
from shardprep.runtime.errors import ConfigError

if TYPE_CHECKING:
    import torch

SEED = 0
CHECKPOINT = "checkpoint.pth"

@dataclass(frozen=True)
class Architecture:
    """A Depth Anything V2 metric architecture: DINOv2 (hidden, layers, heads, MLP width), the 4 layers the DPT neck
    reads, neck, fusion and head widths."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    picked: tuple[int, ...]
    neck: tuple[int, ...]
    fusion: int
    head: int = 32


# The published V2 checkpoints.
SIZES = {
    "small": Architecture(384, 12, 6, 4 * 384, (3, 6, 9, 12), (48, 96, 192, 384), 64),
    "base": Architecture(768, 12, 12, 4 * 768, (3, 6, 9, 12), (96, 192, 384, 768), 128),
    "large": Architecture(1024, 24, 16, 4 * 1024, (5, 12, 18, 24), (256, 512, 1024, 1024), 256),
}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shardprep" / "models"


def random_depth_model(size: str, max_depth: int = 20) -> Path:
    """The folder of a seeded random-weight V2 metric model of `size`, created on first use."""
    if size not in SIZES:
        raise ConfigError(f"stage.depth.model=random:{size}: use random:{', random:'.join(SIZES)}")
    folder = cache_dir() / f"depth-anything-v2-{size}-metric-random"
    if not (folder / "config.json").exists():
        create_folder_once(folder, lambda tmp: save_random_depth_model(tmp, SIZES[size], max_depth))
    return folder


def save_random_depth_model(folder: Path, architecture: Architecture, max_depth: int = 20) -> None:
    """Save `architecture` with seeded random weights into `folder` with `save_pretrained`. (`max_depth` is an int:
    transformers 5 validates config fields strictly and refuses 20.0.)"""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    a = architecture
    backbone = Dinov2Config(hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                            intermediate_size=a.intermediate, patch_size=14, image_size=518,
                            out_features=[f"stage{i}" for i in a.picked], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, depth_estimation_type="metric", max_depth=max_depth,
                                 reassemble_hidden_size=a.hidden, patch_size=14, neck_hidden_sizes=list(a.neck),
                                 fusion_hidden_size=a.fusion, head_hidden_size=a.head)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = DepthAnythingForDepthEstimation(config)
    model.save_pretrained(folder)


def random_checkpoint(config: Path, build: Callable[[], torch.nn.Module]) -> Path:
    """An mmengine checkpoint of the model that `build` makes from `config`, with weights drawn under a fixed seed;
    created on first use in a folder named after the config's content (an edited config gets new weights)."""
    digest = hashlib.sha256(config.read_bytes()).hexdigest()[:12]
    folder = cache_dir() / f"{config.stem}-{digest}-random-seed{SEED}"
    if not (folder / CHECKPOINT).exists():
        create_folder_once(folder, lambda tmp: _save_checkpoint(tmp / CHECKPOINT, build))
    return folder / CHECKPOINT


def _save_checkpoint(path: Path, build: Callable[[], torch.nn.Module]) -> None:
    import torch

    # Building imports mmengine / mmdet / mmpose, whose warnings (pkg_resources' deprecation, metainfo paths) would
    # come before the launcher's own one-line messages on a machine's first run and say nothing about these weights.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(SEED)
        model = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Tensors only: mmengine's loader reads it with torch.load, whose default (weights_only) refuses anything else.
    torch.save({"state_dict": {key: value.cpu() for key, value in model.state_dict().items()}}, path)
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _detector(config: Path) -> torch.nn.Module:
    from mmdet.apis import init_detector

    return init_detector(str(config), None, device="cpu", cfg_options={"model.backbone.init_cfg": None})


def _pose(config: Path) -> torch.nn.Module:
    from mmpose.apis import init_model

    return init_model(str(config), None, device="cpu")


BUILDERS = {"detector": _detector, "pose": _pose}


def model_checkpoint(role: str, part: dict[str, Any]) -> Path:
    """The checkpoint of `stage.<role>` (detector or pose): the configured file, or for a null one the seeded random
    checkpoint of its config."""
    from shardprep.stages.depth.files import resolve_config

    if part.get("checkpoint"):
        return Path(part["checkpoint"]).expanduser()
    config = resolve_config(part["config"])
    return random_checkpoint(config, lambda: BUILDERS[role](config))
