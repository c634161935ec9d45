"""Random-weight Depth Anything V2 models, for the demo run on a machine that cannot download weights.

`stage.depth.model=random:small` builds the V2-Small metric architecture (DINOv2 ViT-S/14 backbone, DPT head) with
seeded random weights, saves it once with `save_pretrained` under the user's cache, and the stage then loads it like
any other local model with `from_pretrained`: the real loading and inference path, meaningless numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

from shardprep.runtime.atomic import create_folder_once
from shardprep.runtime.errors import ConfigError

# The published V2 checkpoints: DINOv2 (hidden, layers, heads), the 4 layers the DPT neck reads, neck and fusion widths.
SIZES = {
    "small": (384, 12, 6, [3, 6, 9, 12], [48, 96, 192, 384], 64),
    "base": (768, 12, 12, [3, 6, 9, 12], [96, 192, 384, 768], 128),
    "large": (1024, 24, 16, [5, 12, 18, 24], [256, 512, 1024, 1024], 256),
}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shardprep" / "models"


def random_depth_model(size: str, max_depth: int = 20) -> Path:
    """The folder of a seeded random-weight V2 metric model of `size`, created on first use. (`max_depth` is an int:
    transformers 5 validates config fields strictly and refuses 20.0.)"""
    if size not in SIZES:
        raise ConfigError(f"stage.depth.model=random:{size}: use random:{', random:'.join(SIZES)}")
    folder = cache_dir() / f"depth-anything-v2-{size}-metric-random"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    hidden, layers, heads, picked, neck, fusion = SIZES[size]
    backbone = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=4 * hidden, patch_size=14, image_size=518,
                            out_features=[f"stage{i}" for i in picked], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, depth_estimation_type="metric", max_depth=max_depth,
                                 reassemble_hidden_size=hidden, patch_size=14, neck_hidden_sizes=neck,
                                 fusion_hidden_size=fusion, head_hidden_size=32)
    torch.manual_seed(0)
    create_folder_once(folder, DepthAnythingForDepthEstimation(config).save_pretrained)
    return folder
