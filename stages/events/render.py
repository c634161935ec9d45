"""The event image of a clip: white canvas, pixels with a positive event red, with only negative events blue.

Each event sets one bit of its pixel (bit 0: a negative event, bit 1: a positive one) in a compiled loop (numba),
chunk by chunk, so it costs a few nanoseconds per event and memory does not grow with the clip; a palette lookup then
gives the colours. "Positive drawn over negative" does not depend on event order, which keeps the image identical
however the events are chunked. Plain numpy needs several passes plus a scatter per chunk and was 5-10x slower.
"""

from __future__ import annotations

import numba
import numpy as np

WHITE = (255, 255, 255, 255)
RED = (255, 0, 0, 255)
BLUE = (0, 0, 255, 255)
# Pixel state (bit 0: negative seen, bit 1: positive seen) -> RGBA, one uint32 per colour: a lookup of one word per
# pixel is ~40x faster than gathering rows of 4 bytes.
PALETTE = np.array([WHITE, BLUE, RED, RED], dtype=np.uint8).view(np.uint32).ravel()


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _mark(x: np.ndarray, y: np.ndarray, p: np.ndarray, width: int, state: np.ndarray) -> None:
    for i in range(x.shape[0]):
        state[np.int64(y[i]) * width + x[i]] |= np.uint8(1) << (p[i] != 0)


class EventCanvas:
    """Accumulates events (x, y, p) into per-pixel polarity bits; `rgba()` gives the (height, width, 4) uint8 image."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.state = np.zeros(width * height, dtype=np.uint8)

    def add(self, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> None:
        if x.size == 0:
            return
        if int(x.max()) >= self.width or int(y.max()) >= self.height:
            raise ValueError(f"event coordinates up to ({int(x.max())}, {int(y.max())}) fall outside the "
                             f"{self.width}x{self.height} sensor: set stage.width/height to the camera's size")
        _mark(x, y, p, self.width, self.state)

    def rgba(self) -> np.ndarray:
        return PALETTE[self.state].view(np.uint8).reshape(self.height, self.width, 4)


def render_loop(x: np.ndarray, y: np.ndarray, p: np.ndarray, width: int, height: int) -> np.ndarray:
    """The same image with one Python step per event: the reference the tests and the benchmark compare against."""
    image = np.full((height, width, 4), 255, dtype=np.uint8)
    positive = np.zeros((height, width), dtype=bool)
    for xi, yi, pi in zip(x.tolist(), y.tolist(), p.tolist()):
        if pi:
            image[yi, xi] = RED
            positive[yi, xi] = True
        elif not positive[yi, xi]:
            image[yi, xi] = BLUE
    return image
