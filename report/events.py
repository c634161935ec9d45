"""Previews of the events stage, from its outputs only: the event image(s), a strip of the clip's frames (as the
`frames` output links them) and the clip's window (start, end, duration, event count from the events NPZ)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from shardprep.report.previews import Card, PreviewJob, write_figure
from shardprep.runtime.npz import read_npz

FRAME_STRIP = 6


class EventsPreview:
    def __init__(self, frames: int = FRAME_STRIP) -> None:
        self.frames = frames

    def __call__(self, job: PreviewJob) -> list[Card]:
        cards = []
        for index, (item, files) in enumerate(zip(job.items, job.files)):
            card = Card(item.id)
            window = read_npz(files["events"])
            card.facts = [("window start (µs)", str(int(window["start_us"]))),
                          ("window end (µs)", str(int(window["end_us"]))),
                          ("duration (ms)", str(int(window["duration_ms"]))), ("events", str(int(window["count"])))]
            card.images.append(self.draw(files, window, job.images_dir / f"events-{index:03d}.png"))
            cards.append(card)
        return cards

    def draw(self, files: dict[str, Path], window: dict[str, np.ndarray], path: Path) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        image = files["image"]
        event_images = sorted(image.glob("*.png")) if image.is_dir() else [image]
        frame_files = sorted(files["frames"].glob("*.png"))
        times = [int(line) for line in (files["frames"] / "timestamps.txt").read_text().split()]
        picks = np.unique(np.linspace(0, len(frame_files) - 1, min(self.frames, len(frame_files))).round().astype(int)
                          ) if frame_files else []
        columns = max(len(event_images), len(picks), 1)
        figure, axes = plt.subplots(2, columns, figsize=(2.6 * columns, 4.6), dpi=100, squeeze=False)
        for column in range(columns):
            for row in range(2):
                axes[row][column].axis("off")
        for column, event_image in enumerate(event_images):
            axes[0][column].imshow(np.asarray(Image.open(event_image)))
            axes[0][column].set_title(f"event image {column}", fontsize=8)
        start = int(window["start_us"])
        for column, pick in enumerate(picks):
            axes[1][column].imshow(np.asarray(Image.open(frame_files[pick])))
            axes[1][column].set_title(f"frame {pick}: {(times[pick] - start) / 1000:+.1f} ms", fontsize=8)
        figure.tight_layout()
        return write_figure(figure, path)
