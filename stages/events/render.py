"""The event image of a clip: white canvas, pixels with a positive event red, with only negative events blue.

Rendering is a pair of boolean masks filled chunk by chunk with vectorised indexing, so it costs a few nanoseconds
per event and memory does not grow with the clip. "Positive drawn over negative" does not depend on event order,
which keeps the image identical however the events are chunked.
"""

from __future__ import annotations

import numpy as np

WHITE = (255, 255, 255, 255)
RED = (255, 0, 0, 255)
BLUE = (0, 0, 255, 255)


class EventCanvas:
    """Accumulates events (x, y, p) into polarity masks; `rgba()` gives the (height, width, 4) uint8 image."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.positive = np.zeros(width * height, dtype=bool)
        self.negative = np.zeros(width * height, dtype=bool)

    def add(self, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> None:
        if x.size == 0:
            return
        if int(x.max()) >= self.width or int(y.max()) >= self.height:
            raise ValueError(f"event coordinates up to ({int(x.max())}, {int(y.max())}) fall outside the "
                             f"{self.width}x{self.height} sensor: set stage.width/height to the camera's size")
        pixel = y.astype(np.int32)
        pixel *= self.width
        pixel += x
        on = p.astype(bool)
        self.positive[pixel[on]] = True
        self.negative[pixel[~on]] = True

    def rgba(self) -> np.ndarray:
        image = np.empty((self.width * self.height, 4), dtype=np.uint8)
        image[:] = WHITE
        image[self.negative] = BLUE
        image[self.positive] = RED
        return image.reshape(self.height, self.width, 4)


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
