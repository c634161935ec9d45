"""Image resampling for the three models, as batched torch ops on the device that runs them.

Each function reproduces the resampling of the model's own test pipeline (OpenCV's, in mmdet/mmpose and Depth
Anything), so decoded frames are uploaded once and never resampled on the CPU. The coordinate maps are those of
`geometry.py`; its analytic tests pin both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from shardprep.stages.depth.geometry import Letterbox, TopdownCrop


def letterbox(frames: Sequence[torch.Tensor], size: int, pad_value: float) -> tuple[torch.Tensor, list[Letterbox]]:
    """Frames (3, H, W) of any sizes -> (B, 3, size, size) float32: keep-ratio bilinear resize (cv2's INTER_LINEAR
    half-pixel mapping, no antialiasing; uint8 frames are rounded back to whole values as cv2 does), padded
    bottom/right with `pad_value`. Frames of one size are resized in one call."""
    boxes = [Letterbox.fit(tuple(frame.shape[1:]), size) for frame in frames]
    out = torch.full((len(frames), 3, size, size), float(pad_value), device=frames[0].device)
    for members in same_size(frames).values():
        height, width = boxes[members[0]].resized
        source = torch.stack([frames[i] for i in members])
        resized = F.interpolate(source.float(), size=(height, width), mode="bilinear", align_corners=False)
        if source.dtype == torch.uint8:
            resized = resized.clamp(0, 255).round()
        out[members, :, :height, :width] = resized
    return out, boxes


def same_size(frames: Sequence[torch.Tensor]) -> dict[tuple[int, ...], list[int]]:
    """Indices of the frames by their (H, W), in order: the groups one batched call can take."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, frame in enumerate(frames):
        groups.setdefault(tuple(frame.shape[1:]), []).append(index)
    return groups


def crop_grids(crops: Sequence[TopdownCrop], image_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """The `grid_sample` grids (n, H_in, W_in, 2) that warp a frame of `image_size` into each crop's model input.

    Crop pixel (u, v) reads frame point x = cx + (u - W/2) * sw / W (same for y), as cv2.warpAffine does with
    mmpose's warp matrix; grid_sample (align_corners=False) wants (2x + 1) / W_frame - 1. All crops share the
    model input size (one pose model).
    """
    width_in, height_in = crops[0].input_size
    height, width = image_size
    boxes = uploaded(np.array([[*crop.center, *crop.scale] for crop in crops], dtype=np.float64), device)
    center, scale = boxes[:, :2], boxes[:, 2:]
    u = torch.arange(width_in, device=device, dtype=torch.float64)
    v = torch.arange(height_in, device=device, dtype=torch.float64)
    x = center[:, 0:1] + (u - width_in / 2) * scale[:, 0:1] / width_in  # (n, W_in)
    y = center[:, 1:2] + (v - height_in / 2) * scale[:, 1:2] / height_in  # (n, H_in)
    gx = ((2 * x + 1) / width - 1)[:, None, :].expand(-1, height_in, -1)
    gy = ((2 * y + 1) / height - 1)[:, :, None].expand(-1, -1, width_in)
    return torch.stack([gx, gy], dim=-1).float()


def uploaded(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """`array` on `device`, queued without the host waiting: from pageable memory a copy to the GPU returns only
    once the stream has run everything queued before it (the depth forwards), and the host could queue nothing
    meanwhile; from pinned memory it is queued like a kernel."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def warp_crops(frames: Sequence[torch.Tensor], crops: Sequence[TopdownCrop]) -> torch.Tensor:
    """Crop i of frames[i] (3, H, W) -> (n, 3, H_in, W_in) float32, bilinear, zeros outside the frame (cv2's border
    0); one `grid_sample` per frame size."""
    width_in, height_in = crops[0].input_size
    out = torch.empty((len(crops), 3, height_in, width_in), device=frames[0].device)
    for size, members in same_size(frames).items():
        grid = crop_grids([crops[i] for i in members], size, frames[0].device)
        source = torch.stack([frames[i] for i in members]).float()
        out[members] = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out


def resize_bicubic(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, h, w) float32 bicubic (cv2 INTER_CUBIC's kernel, a = -0.75), values as given."""
    return F.interpolate(frames.float(), size=size, mode="bicubic", align_corners=False)
