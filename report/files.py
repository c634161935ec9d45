"""Previews by listing: per item (for external tools, per video) each output's files with their size and, for
arrays, shape and dtype from the headers. Any stage can use it; it reads no array data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shardprep.report.previews import Card, PreviewJob
from shardprep.runtime.npz import npz_headers


class FileListing:
    def __call__(self, job: PreviewJob) -> list[Card]:
        cards = []
        for item, files in zip(job.items, job.files):
            card = Card(item.id, facts=[("frames (item weight)", str(item.weight))])
            for name, path in files.items():
                members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
                for member in members:
                    label = f"{name}: {member.relative_to(path.parent)}"
                    card.facts.append((label, describe(member)))
            cards.append(card)
        return cards


def describe(path: Path) -> str:
    size = f"{path.stat().st_size:,} bytes"
    try:
        if path.suffix == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            return f"{size}, {array.dtype} {tuple(array.shape)}"
        if path.suffix == ".npz":
            headers = npz_headers(path)
            return f"{size}, " + "; ".join(f"{key} {dtype} {tuple(shape)}" for key, (shape, dtype) in headers.items())
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            return f"{size}, keys {sorted(data)[:12]}" if isinstance(data, dict) else f"{size}, {type(data).__name__}"
    except (OSError, ValueError) as error:
        return f"{size}, unreadable: {error}"
    return size
