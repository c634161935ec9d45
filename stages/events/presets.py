"""Named conventions for the event images, so that a clip's images are the ones its consumer would draw itself.

A preset fixes how many images a clip gets (its events cut into that many equal parts by count, the remainder in
the last, as EventGPT's `get_event_images_list` does), which polarity a pixel shows when both hit it, and the PNG's
colour mode. Each can be overridden on its own (`stage.images_per_clip`, `stage.draw_order`, `stage.image_mode`).
docs/events.md lists the upstream file and line each preset follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardprep.runtime.errors import ConfigError
from shardprep.stages.events.render import DRAW_ORDERS

IMAGE_MODES = ("RGBA", "RGB")


@dataclass(frozen=True)
class ImageConvention:
    images_per_clip: int
    draw_order: str
    mode: str


PRESETS = {
    # This project's: one image per clip, positive over negative (independent of event order).
    "shardprep": ImageConvention(images_per_clip=1, draw_order="positive_on_top", mode="RGBA"),
    # The seed's builder (EventGPT feasible/my_egpt_dsec_dataset/preprocess_event_images.py): 5 images, negative
    # (blue) assigned after positive (red), RGB.
    "seed": ImageConvention(images_per_clip=5, draw_order="negative_on_top", mode="RGB"),
    # EventGPT's own loader (common/common.py process_event_data / generate_event_image): 5 images, the last event
    # of a pixel wins, RGB.
    "eventgpt": ImageConvention(images_per_clip=5, draw_order="last_event", mode="RGB"),
}


def image_convention(preset: str, images_per_clip: int | None, draw_order: str | None,
                     mode: str | None) -> ImageConvention:
    """The preset with the settings given (not None) in its place; a bad value is a `ConfigError`."""
    if preset not in PRESETS:
        raise ConfigError(f"stage.event_image={preset!r}: use one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    convention = ImageConvention(
        images_per_clip=base.images_per_clip if images_per_clip is None else images_per_clip,
        draw_order=base.draw_order if draw_order is None else draw_order,
        mode=base.mode if mode is None else mode,
    )
    count = convention.images_per_clip
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"stage.images_per_clip={count!r}: must be a whole number >= 1")
    if convention.draw_order not in DRAW_ORDERS:
        raise ConfigError(f"stage.draw_order={convention.draw_order!r}: use one of {', '.join(DRAW_ORDERS)}")
    if convention.mode not in IMAGE_MODES:
        raise ConfigError(f"stage.image_mode={convention.mode!r}: use one of {', '.join(IMAGE_MODES)}")
    return convention
