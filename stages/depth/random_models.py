"""Random-weight Depth Anything V2 models, for the demo run on a machine that cannot download weights.

`stage.depth.model=random:small` builds the V2-Small metric architecture (DINOv2 ViT-S/14 backbone, DPT head) with
seeded random weights, saves it once with `save_pretrained` under the user's cache, and the stage then loads it like
any other local model with `from_pretrained`: the real loading and inference path, meaningless numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shardprep.runtime.atomic import create_folder_once
from shardprep.runtime.errors import ConfigError

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
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
