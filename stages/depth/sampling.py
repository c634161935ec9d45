"""Per-joint metric depth: the value at the joint's pixel, and the min/max over a disk of radius r px around it.

Depth Anything's native output is upsampled to the frame bilinearly with align_corners=True. Rather than upsampling
whole frames (H x W floats each, most never read), the few pixels needed are interpolated straight from the model's
output with the same formula, which gives the same numbers as sampling the upsampled map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from shardprep.stages.depth.geometry import disk_offsets, pixel_of


def upsampled_at(depth: torch.Tensor, image_size: tuple[int, int], ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
    """`F.interpolate(depth[:, None], image_size, mode="bilinear", align_corners=True)[b, 0, iy, ix]`, computed only
    at the requested integer pixels. depth (B, h, w); ix, iy (B, ...) integer tensors; returns (B, ...) float32."""
    batch, height, width = depth.shape
    full_h, full_w = image_size
    depth = depth.float()
    sy = iy.double() * ((height - 1) / max(full_h - 1, 1))
    sx = ix.double() * ((width - 1) / max(full_w - 1, 1))
    y0 = sy.floor().long().clamp(0, height - 1)
    x0 = sx.floor().long().clamp(0, width - 1)
    y1 = (y0 + 1).clamp(max=height - 1)
    x1 = (x0 + 1).clamp(max=width - 1)
    wy = (sy - y0).float()
    wx = (sx - x0).float()
    flat = depth.reshape(batch, -1)
    shape = ix.shape

    def gather(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return torch.gather(flat, 1, (yy * width + xx).reshape(batch, -1)).reshape(shape)

    top = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def joint_depths(depth: torch.Tensor, image_size: tuple[int, int], keypoints: np.ndarray,
                 radius: int) -> dict[str, np.ndarray]:
    """Per joint: depth_point, depth_min, depth_max (B, J) float32 and in_image (B, J) bool.

    depth (B, h, w) is the model's output for B frames of `image_size`; keypoints (B, J, 2) px. Each joint reads the
    pixel nearest it, clipped into the image (in_image says whether it was inside); the disk around that pixel
    covers only pixels inside the image, so min/max never read padding.
    """
    batch, joints = keypoints.shape[:2]
    height, width = image_size
    pixels, inside = pixel_of(keypoints.reshape(-1, 2), image_size)
    offsets = disk_offsets(radius)
    # (B*J, K, 2) candidate pixels; those outside the frame are masked out of min/max.
    disk = pixels[:, None, :] + offsets[None, :, :]
    valid = (disk[..., 0] >= 0) & (disk[..., 0] < width) & (disk[..., 1] >= 0) & (disk[..., 1] < height)
    disk[..., 0] = disk[..., 0].clip(0, width - 1)
    disk[..., 1] = disk[..., 1].clip(0, height - 1)
    device = depth.device
    ix = torch.from_numpy(disk[..., 0].reshape(batch, -1)).to(device)
    iy = torch.from_numpy(disk[..., 1].reshape(batch, -1)).to(device)
    values = upsampled_at(depth, image_size, ix, iy).reshape(batch, joints, len(offsets)).cpu().numpy()
    valid = valid.reshape(batch, joints, len(offsets))
    return {
        "depth_point": values[..., 0].astype(np.float32),  # offset (0, 0) comes first and is always in the image
        "depth_min": np.where(valid, values, np.inf).min(axis=-1).astype(np.float32),
        "depth_max": np.where(valid, values, -np.inf).max(axis=-1).astype(np.float32),
        "in_image": inside.reshape(batch, joints),
    }


def features_at(maps: torch.Tensor, points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Feature vectors (B, J, C) float16, bilinear at points (B, J, 2) px of an image of `image_size` that the
    feature maps (B, C, h, w) cover edge to edge (cell centres at ((j + 0.5) * size / h - 0.5) px)."""
    height, width = image_size
    grid = torch.from_numpy(np.asarray(points, dtype=np.float64)).to(maps.device)
    grid = torch.stack([(2 * grid[..., 0] + 1) / width - 1, (2 * grid[..., 1] + 1) / height - 1], dim=-1)
    sampled = F.grid_sample(maps.float(), grid[:, None].float(), mode="bilinear", padding_mode="border",
                            align_corners=False)
    return sampled[:, :, 0].permute(0, 2, 1).half().cpu().numpy()
