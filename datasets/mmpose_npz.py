"""Datasets stored in MMPose's body-3D annotation format: one NPZ with a row per item, and an image folder.

Keys per row (plain arrays, no pickle): `imgname` (path of the image under the image root), `center` (2,) px,
`scale` (box side / 200), `part` (17, 3) [x, y, visible] px, `S` (17, 4) [X, Y, Z, visible] m. Items keep the row
order of the file. Dataset-specific adapters subclass this and say how an `imgname` names its sequence.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.errors import ConfigError

REQUIRED_KEYS = ("imgname", "center", "scale", "part")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def load_annotations(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an annotation NPZ, checked for the required keys and a common first dimension."""
    if not path.is_file():
        raise ConfigError(f"annotation file not found: {path} (check the dataset's root/annotation settings)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError as error:
        raise ConfigError(f"{path}: not a plain-array NPZ ({error})") from None
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)}; an MMPose body-3D annotation needs {REQUIRED_KEYS}")
    rows = len(arrays["imgname"])
    for key, array in arrays.items():
        if array.ndim == 0 or len(array) != rows:
            raise ConfigError(f"{path}: array {key!r} has shape {array.shape}, expected first dimension {rows} (imgname)")
    return arrays


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image as (H, W, 3) uint8 RGB, with an error that names the file."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # writable: tensors made from it need no copy or warning
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path} (check dataset.image_root)") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot decode image {path}: {error} (re-extract or replace this frame)") from None


class MMPoseDataset(Dataset):
    """Rows of an MMPose annotation NPZ as items; `read` gives the frame and its annotation row."""

    def __init__(self, name: str, annotation: str, image_root: str) -> None:
        super().__init__(name)
        self.annotation = Path(annotation).expanduser()
        self.image_root = Path(image_root).expanduser()
        self._arrays: dict[str, np.ndarray] | None = None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = load_annotations(self.annotation)
        return self._arrays

    def validate(self) -> None:
        if not self.image_root.is_dir():
            raise ConfigError(f"image root not found: {self.image_root} (set dataset.image_root or dataset.root)")
        self.arrays  # loads and checks the annotation file

    def sequence_of(self, imgname: str) -> str:
        """The video/camera an image belongs to; by default the folder that holds it."""
        return str(Path(imgname).parent)

    def image_path(self, imgname: str) -> Path:
        """Where the image of a row is; adapters whose `imgname` is not a path under the image root override this."""
        return self.image_root / imgname

    def item_id(self, imgname: str) -> str:
        return _UNSAFE.sub("_", Path(imgname).stem)

    def items(self) -> list[Item]:
        return [
            Item(id=self.item_id(name), sequence=self.sequence_of(name), index=row)
            for row, name in enumerate(self.arrays["imgname"].tolist())
        ]

    def read(self, item: Item) -> dict[str, Any]:
        row = {key: array[item.index] for key, array in self.arrays.items()}
        image = read_rgb(self.image_path(str(row["imgname"])))
        return {"image": image, "row": row, "bbox_gt": gt_box(row, image.shape[:2])}

    def fingerprint_files(self) -> list[Path]:
        return [self.annotation]


def gt_box(row: dict[str, np.ndarray], image_size: tuple[int, int]) -> np.ndarray:
    """The annotated person's box, xyxy px, from MMPose's `center` and `scale` (side = 200 * scale), in the image."""
    height, width = image_size
    half = 100.0 * float(np.max(row["scale"]))
    cx, cy = (float(v) for v in row["center"])
    return np.array(
        [max(0.0, cx - half), max(0.0, cy - half), min(float(width), cx + half), min(float(height), cy + half)],
        dtype=np.float32,
    )
