"""Coordinate transforms between the full-resolution frame and each model's input, as plain numpy.

Every model runs on the full-resolution frame and every result is brought back to its pixel grid, so a keypoint
(x, y) and a depth pixel (y, x) mean the same place. Convention throughout: pixel centres sit at integer
coordinates (OpenCV's, which mmdet and mmpose use), so pixel i covers [i - 0.5, i + 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """RTMDet's test-time resize: keep the aspect ratio so the long side fits `size`, pad bottom/right to size x size.

    `resized` is (h, w) of the image inside the padded square; the per-axis scales are those mmdet records as
    `scale_factor` (rounded sizes make them differ slightly from one ratio).
    """

    image_size: tuple[int, int]
    resized: tuple[int, int]

    @classmethod
    def fit(cls, image_size: tuple[int, int], size: int) -> Letterbox:
        height, width = image_size
        ratio = min(size / max(height, width), size / min(height, width))
        return cls(image_size, (int(height * ratio + 0.5), int(width * ratio + 0.5)))

    @property
    def scale_xy(self) -> np.ndarray:
        return np.array([self.resized[1] / self.image_size[1], self.resized[0] / self.image_size[0]])

    def boxes_to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (n, 4) xyxy from the padded input back to the frame, clipped to it (as mmdet's rescale does)."""
        scale = np.tile(self.scale_xy, 2)
        out = np.asarray(boxes, dtype=np.float64) / scale
        height, width = self.image_size
        out[:, 0::2] = out[:, 0::2].clip(0, width)
        out[:, 1::2] = out[:, 1::2].clip(0, height)
        return out


@dataclass(frozen=True)
class TopdownCrop:
    """mmpose's top-down crop of one box: centre and size (px, aspect fixed to the model's input), input (W, H).

    Image -> crop is u = (x - cx) * W / sw + W / 2 (same for v); `to_image` is its inverse, which is what mmpose
    applies to decoded keypoints.
    """

    center: np.ndarray
    scale: np.ndarray
    input_size: tuple[int, int]

    @classmethod
    def from_box(cls, box: np.ndarray, input_size: tuple[int, int], padding: float = 1.25) -> TopdownCrop:
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        scale_w, scale_h = (x2 - x1) * padding, (y2 - y1) * padding
        aspect = input_size[0] / input_size[1]
        if scale_w > aspect * scale_h:
            scale_h = scale_w / aspect
        else:
            scale_w = scale_h * aspect
        return cls(center, np.array([scale_w, scale_h]), input_size)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        size = np.asarray(self.input_size, dtype=np.float64)
        return (np.asarray(points, dtype=np.float64) - self.center) * size / self.scale + size / 2

    def to_image(self, points: np.ndarray) -> np.ndarray:
        size = np.asarray(self.input_size, dtype=np.float64)
        return np.asarray(points, dtype=np.float64) / size * self.scale + self.center - self.scale / 2


def depth_input_size(image_size: tuple[int, int], base: int = 518, multiple: int = 14) -> tuple[int, int]:
    """Depth Anything's native input (h, w): keep the aspect ratio, short side >= base, each side a multiple of 14.

    This is its `Resize(keep_aspect_ratio=True, ensure_multiple_of=14, resize_method="lower_bound")`: the larger of
    the two scales, each side rounded to the nearest multiple and rounded up where that would fall below `base`.
    """
    height, width = image_size
    scale = max(base / height, base / width)

    def side(length: float) -> int:
        rounded = round(length / multiple) * multiple
        return int(math.ceil(length / multiple) * multiple) if rounded < base else int(rounded)

    return side(scale * height), side(scale * width)


def pixel_of(points: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The pixel (ix, iy) nearest each point, clipped into the image, and whether the point lies inside it.

    A point is in the image when it falls on one of its pixels: -0.5 <= x < W - 0.5 (same for y).
    """
    height, width = image_size
    points = np.asarray(points, dtype=np.float64)
    inside = (
        (points[:, 0] >= -0.5) & (points[:, 0] < width - 0.5) & (points[:, 1] >= -0.5) & (points[:, 1] < height - 0.5)
    )
    pixels = np.floor(points + 0.5)
    pixels[:, 0] = pixels[:, 0].clip(0, width - 1)
    pixels[:, 1] = pixels[:, 1].clip(0, height - 1)
    return pixels.astype(np.int64), inside


def disk_offsets(radius: int) -> np.ndarray:
    """Integer offsets (k, 2) [dx, dy] with dx^2 + dy^2 <= r^2, centre first, in a fixed order."""
    span = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(span, span, indexing="ij")
    keep = dx**2 + dy**2 <= radius**2
    offsets = np.stack([dx[keep], dy[keep]], axis=1)
    centre = np.flatnonzero((offsets == 0).all(axis=1))[0]
    return np.concatenate([offsets[centre:centre + 1], np.delete(offsets, centre, axis=0)])
