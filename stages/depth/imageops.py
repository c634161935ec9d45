"""Image resampling for the three models, as batched torch ops on the device that runs them.

Each function reproduces the resampling of the model's own test pipeline (OpenCV's, in mmdet/mmpose and Depth
Anything), so decoded frames are uploaded once and never resampled on the CPU. The coordinate maps are those of
`geometry.py`; its analytic tests pin both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from shardprep.stages.depth.geometry import Letterbox, TopdownCrop


def letterbox(frames: Sequence[torch.Tensor], size: int, pad_value: float) -> tuple[torch.Tensor, list[Letterbox]]:
    """Frames (3, H, W) of any sizes -> (B, 3, size, size) float32: keep-ratio bilinear resize (cv2's INTER_LINEAR
    half-pixel mapping, no antialiasing; uint8 frames are rounded back to whole values as cv2 does), padded
    bottom/right with `pad_value`."""
    boxes = [Letterbox.fit(tuple(frame.shape[1:]), size) for frame in frames]
    out = torch.full((len(frames), 3, size, size), float(pad_value), device=frames[0].device)
    for index, (frame, box) in enumerate(zip(frames, boxes)):
        height, width = box.resized
        resized = F.interpolate(frame[None].float(), size=(height, width), mode="bilinear", align_corners=False)
        out[index, :, :height, :width] = resized[0].clamp(0, 255).round() if frame.dtype == torch.uint8 else resized[0]
    return out, boxes


def crop_grid(crop: TopdownCrop, image_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """The `grid_sample` grid (1, H_in, W_in, 2) that warps a frame into `crop`'s model input.

    Crop pixel (u, v) reads frame point x = cx + (u - W/2) * sw / W (same for y), as cv2.warpAffine does with
    mmpose's warp matrix; grid_sample (align_corners=False) wants (2x + 1) / W_frame - 1.
    """
    width_in, height_in = crop.input_size
    height, width = image_size
    u = torch.arange(width_in, device=device, dtype=torch.float64)
    v = torch.arange(height_in, device=device, dtype=torch.float64)
    x = crop.center[0] + (u - width_in / 2) * crop.scale[0] / width_in
    y = crop.center[1] + (v - height_in / 2) * crop.scale[1] / height_in
    gx = (2 * x + 1) / width - 1
    gy = (2 * y + 1) / height - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    return grid[None].float()


def warp_crops(frame: torch.Tensor, crops: Sequence[TopdownCrop]) -> torch.Tensor:
    """(3, H, W) frame -> (n, 3, H_in, W_in) float32 crops, bilinear, zeros outside the frame (cv2's border 0)."""
    image_size = tuple(frame.shape[1:])
    grid = torch.cat([crop_grid(crop, image_size, frame.device) for crop in crops])
    source = frame[None].float().expand(len(crops), -1, -1, -1)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resize_bicubic(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, h, w) float32 bicubic (cv2 INTER_CUBIC's kernel, a = -0.75), values as given."""
    return F.interpolate(frames.float(), size=size, mode="bicubic", align_corners=False)
