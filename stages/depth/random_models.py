"""Random-weight Depth Anything V2 models, for the demo run on a machine that cannot download weights.

`stage.depth.model=random:small` builds the V2-Small metric architecture (DINOv2 ViT-S/14 backbone, DPT head) with
seeded random weights, saves it once with `save_pretrained` under the user's cache, and the stage then loads it like
any other local model with `from_pretrained`: the real loading and inference path, meaningless numbers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from shardprep.runtime.atomic import TEMP_PREFIX
from shardprep.runtime.errors import ConfigError

# DINOv2 backbone sizes of the published V2 checkpoints: (hidden, layers, heads, neck widths, fusion width).
SIZES = {
    "small": (384, 12, 6, [48, 96, 192, 384], 64),
    "base": (768, 12, 12, [96, 192, 384, 768], 128),
    "large": (1024, 24, 16, [256, 512, 1024, 1024], 256),
}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shardprep" / "models"


def random_depth_model(size: str, max_depth: float = 20.0) -> Path:
    """The folder of a seeded random-weight V2 metric model of `size`, created on first use."""
    if size not in SIZES:
        raise ConfigError(f"stage.depth.model=random:{size}: use random:{', random:'.join(SIZES)}")
    folder = cache_dir() / f"depth-anything-v2-{size}-metric-random"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    hidden, layers, heads, neck, fusion = SIZES[size]
    picked = [layers // 4 * k for k in range(1, 5)]  # the four backbone layers the DPT neck reads
    backbone = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=4 * hidden, patch_size=14, image_size=518,
                            out_features=[f"stage{i}" for i in picked], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, depth_estimation_type="metric", max_depth=max_depth,
                                 reassemble_hidden_size=hidden, patch_size=14, neck_hidden_sizes=neck,
                                 fusion_hidden_size=fusion, head_hidden_size=32)
    torch.manual_seed(0)
    tmp = folder.with_name(f"{TEMP_PREFIX}{os.getpid()}-{folder.name}")
    DepthAnythingForDepthEstimation(config).save_pretrained(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process made it first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
