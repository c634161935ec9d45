"""Datasets stored in MMPose's body-3D annotation format: one NPZ with a row per item, and an image folder.

Keys per row (plain arrays, no pickle): `imgname` (path of the image under the image root), `center` (2,) px,
`scale` (box side / 200), `part` (17, 3) [x, y, visible] px, `S` (17, 4) [X, Y, Z, visible] m. Items keep the row
order of the file. Dataset-specific adapters subclass this and say how an `imgname` names its sequence.
"""

from __future__ import annotations

import io
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path, PureWindowsPath
from typing import IO, Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from shardprep.datasets.annotation_file import load_npz
from shardprep.datasets import joints
from shardprep.datasets.base import Dataset, Item
from shardprep.datasets.layouts import Layout, Listing, check_layouts, choose
from shardprep.runtime.errors import ConfigError

REQUIRED_KEYS = ("imgname", "center", "scale", "part")
FINITE_KEYS = ("center", "scale", "part", "S")
# Units of the annotation keys (MMPose body-3D), written into merged files beside the joint names.
UNITS = {"center": "px", "scale": "px/200 (box side / 200)", "part": "px (x, y), visibility",
         "S": "m (X, Y, Z, camera frame), visibility"}
SHOWN_ROWS = 5
SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def load_annotations(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an annotation NPZ, checked: readable (annotation_file.py), the required keys, a common first
    dimension, finite numbers, and imgnames that stay under the image root."""
    if not path.is_file():
        raise ConfigError(f"annotation file not found: {path} (check the dataset's root/annotation settings)")
    arrays = load_npz(path)
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ConfigError(f"{path}: missing key(s) {', '.join(missing)}; an MMPose body-3D annotation needs {REQUIRED_KEYS}")
    rows = len(arrays["imgname"])
    for key, array in arrays.items():
        if array.ndim == 0 or len(array) != rows:
            raise ConfigError(f"{path}: array {key!r} has shape {array.shape}, expected first dimension {rows} (imgname)")
    check_finite(path, arrays)
    check_inside_root(path, arrays["imgname"])
    return arrays


def check_finite(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """NaN/Inf in a box or pose would become a whole-image box or a NaN loss far from here: refused, naming rows."""
    for key in FINITE_KEYS:
        if key not in arrays or arrays[key].dtype.kind not in "fc":
            continue
        bad = np.flatnonzero(~np.isfinite(arrays[key].reshape(len(arrays[key]), -1)).all(axis=1))
        if len(bad):
            shown = ", ".join(f"{row} ({arrays['imgname'][row]})" for row in bad[:SHOWN_ROWS])
            raise ConfigError(f"{path}: {key!r} holds NaN/Inf in {len(bad)} row(s): {shown}"
                              f"{', ...' if len(bad) > SHOWN_ROWS else ''}; fix or drop those rows")


def check_inside_root(path: Path, imgnames: np.ndarray) -> None:
    """An imgname is a path under the image root: absolute paths and `..` would read files from elsewhere."""
    for row, name in enumerate(imgnames.tolist()):
        if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in re.split(r"[/\\]", name):
            raise ConfigError(f"{path} row {row}: imgname {name!r} points outside the image root (absolute or `..`); "
                              "imgnames must be paths under dataset.image_root")


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file as (H, W, 3) uint8 RGB (`decode_rgb`), with an error that names the file."""
    try:
        return decode_rgb(path, path)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path} (check dataset.image_root)") from None


def decode_rgb(source: Path | IO[bytes], name: str | Path) -> np.ndarray:
    """Decode an image (a file, or its bytes in a stream) as (H, W, 3) uint8 RGB; a ValueError naming `name` if it
    cannot be decoded. The one CPU decoder: frames read as files and JPEG bytes the GPU decoder refused go through it.

    Pillow's `convert("RGB")` clips 16-bit grey (`I;16`) values to 255 (a near-white frame that still "works"), so
    those are scaled to 8 bits (value / 257, rounded); 32-bit integer or float images have no agreed range and are
    refused (a recorded item error). 16-bit RGB files are already reduced to 8 bits by Pillow when opened.
    """
    try:
        with Image.open(source) as image:
            if image.mode in SIXTEEN_BIT_GREY:
                grey = np.rint(np.asarray(image, dtype=np.float64) / 257.0).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if image.mode in ("I", "F"):
                raise ValueError(f"image {name} has mode {image.mode!r} (32-bit {'float' if image.mode == 'F' else 'int'}"
                                 "): its intensity range is unknown; convert it to 8- or 16-bit")
            return np.array(image.convert("RGB"))  # writable: tensors made from it need no copy or warning
    except FileNotFoundError:  # an OSError, but not a bad image: the caller says where to look
        raise
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot decode image {name}: {error} (re-extract or replace this frame)") from None


def read_jpeg(path: Path) -> tuple[np.ndarray, tuple[int, int]] | None:
    """A baseline or progressive RGB/greyscale JPEG's bytes and (H, W) from its header (nothing decoded); None for
    any other file (PNG, CMYK JPEG), which is decoded on the CPU instead."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path} (check dataset.image_root)") from None
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                return None
            width, height = image.size
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot decode image {path}: {error} (re-extract or replace this frame)") from None
    return np.frombuffer(data, dtype=np.uint8), (height, width)


class MMPoseDataset(Dataset):
    """Rows of an MMPose annotation NPZ as items; `read` gives the frame and its annotation row.

    Where a row's image file is comes from a `Layout` (datasets/layouts.py): the adapter's known `layouts`, one named
    by `layout`, or `image_pattern` (+ `frame_offset`) given by the user; `layout: auto` leaves the choice to the
    launch-time check of the files (`validate`, `choose_layout`), which records it in the run's config.
    """

    layouts: ClassVar[dict[str, Layout]] = {"imgname": Layout("imgname")}
    joint_names: tuple[str, ...] = joints.H36M  # the order of `part` and `S` as `arrays` gives them

    def __init__(self, name: str, annotation: str, image_root: str, layout: str = "auto",
                 image_pattern: str | None = None, frame_offset: int = 0) -> None:
        super().__init__(name)
        self.annotation = Path(annotation).expanduser()
        self.image_root = Path(image_root).expanduser()
        self._arrays: dict[str, np.ndarray] | None = None
        if image_pattern is not None:
            self.candidates = [Layout("custom", image_pattern, frame_offset)]
        elif layout == "auto":
            self.candidates = list(self.layouts.values())
        elif layout in self.layouts:
            self.candidates = [self.layouts[layout]]
        else:
            raise ConfigError(f"dataset {name!r}: layout={layout!r} is not one of auto, {', '.join(self.layouts)} "
                              "(or give dataset.image_pattern)")
        self.layout: Layout | None = self.candidates[0] if len(self.candidates) == 1 else None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = load_annotations(self.annotation)
        return self._arrays

    def validate(self) -> None:
        self.check_annotation()
        choose_layout(self.name, {"": self})

    def check_annotation(self) -> None:
        """Everything `validate` checks but the images (SplitDataset checks those over all its splits at once)."""
        if not self.image_root.is_dir():
            raise ConfigError(f"image root not found: {self.image_root} (set dataset.image_root or dataset.root)")
        self.arrays  # loads and checks the annotation file
        self.check_names()
        check_unique_ids(str(self.annotation), self.labelled_rows())

    def resolved_settings(self) -> dict[str, Any]:
        return {"layout": self.layout.name} if len(self.candidates) > 1 and self.layout is not None else {}

    def check_names(self) -> None:
        """Refuse imgnames the adapter cannot parse (before ids are made from them); any name is a path here."""

    def fields(self, imgname: str) -> dict[str, str | int]:
        """The parts of an imgname that layouts build file names from; none for a plain path."""
        return {}

    def sequence_of(self, imgname: str) -> str:
        """The video/camera an image belongs to; by default the folder that holds it."""
        return str(Path(imgname).parent)

    def image_path(self, imgname: str) -> Path:
        """Where the image of a row is, under the run's layout."""
        if self.layout is None:
            raise ConfigError(f"dataset {self.name!r}: layout=auto is decided by the launch's check of the files; "
                              f"set dataset.layout to one of {', '.join(self.layouts)}")
        return self.image_root / self.layout.relative(imgname, self.fields(imgname))

    def labelled_rows(self, split: str = "") -> list[tuple[str, int, str, str]]:
        """(split, row, imgname, item id) of every row, for the launch's checks."""
        return [(split, row, name, self.item_id(name)) for row, name in enumerate(self.arrays["imgname"].tolist())]

    def item_id(self, imgname: str) -> str:
        """The imgname's path without extension, `/` as `+`; a folder whose name starts the file's stem adds nothing
        and is left out (H36M's `S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg` gives the stem,
        EMDB-style `P0_00/00000.jpg` gives `P0_00+00000`), so files of one stem in two folders stay apart."""
        *folders, file = imgname.replace("\\", "/").split("/")
        stem = posixpath.splitext(file)[0]
        kept = [folder for folder in folders if folder not in ("", ".") and not stem.startswith(folder)]
        return _UNSAFE.sub("_", "+".join([*kept, stem]))

    def items(self) -> list[Item]:
        return [
            Item(id=self.item_id(name), sequence=self.sequence_of(name), index=row)
            for row, name in enumerate(self.arrays["imgname"].tolist())
        ]

    def read(self, item: Item) -> dict[str, Any]:
        row = {key: array[item.index] for key, array in self.arrays.items()}
        image = read_rgb(self.image_path(str(row["imgname"])))
        return {"image": image, "row": row, "bbox_gt": gt_box(row, image.shape[:2])}

    def read_encoded(self, item: Item) -> dict[str, Any]:
        """A JPEG frame as its bytes (`encoded`, `image_file`, `image_size` (H, W) from its header); other files as
        `read` gives them."""
        row = {key: array[item.index] for key, array in self.arrays.items()}
        path = self.image_path(str(row["imgname"]))
        jpeg = read_jpeg(path)
        if jpeg is None:
            return self.read(item)
        data, size = jpeg
        return {"encoded": data, "image_file": str(path), "image_size": size, "row": row, "bbox_gt": gt_box(row, size)}

    def fingerprint_files(self) -> list[Path]:
        return [self.annotation]


def choose_layout(dataset: str, parts: Mapping[str, MMPoseDataset]) -> Layout:
    """Every row's image must exist (one directory listing per folder, never a stat per row); of several known layouts
    the one under which all of them exist is the run's, set on every part. The parts (splits, keyed by name) share
    one image root and adapter."""
    first = next(iter(parts.values()))
    rows = (
        (split, row, name, part.fields(name))
        for split, part in parts.items()
        for row, name in enumerate(part.arrays["imgname"].tolist())
    )
    setting = ("dataset.image_pattern" if first.candidates[0].name == "custom"
               else f"dataset.layout (one of {', '.join(first.layouts)}) or dataset.image_pattern")
    listing = Listing(first.image_root)
    chosen = choose(dataset, check_layouts(rows, first.candidates, listing), listing, setting)
    for part in parts.values():
        part.layout = chosen
    return chosen


def gt_box(row: dict[str, np.ndarray], image_size: tuple[int, int]) -> np.ndarray:
    """The annotated person's box, xyxy px, from MMPose's `center` and `scale` (side = 200 * scale), in the image."""
    height, width = image_size
    half = 100.0 * float(np.max(row["scale"]))
    cx, cy = (float(v) for v in row["center"])
    return np.array(
        [max(0.0, cx - half), max(0.0, cy - half), min(float(width), cx + half), min(float(height), cy + half)],
        dtype=np.float32,
    )


def check_unique_ids(where: str, rows: list[tuple[str, int, str, str]]) -> None:
    """Item ids name checkpoint files: two rows with one id would overwrite each other's. Refused naming both rows."""
    seen: dict[str, tuple[str, int, str]] = {}
    for split, row, name, item_id in rows:
        if item_id in seen:
            first_split, first_row, first_name = seen[item_id]
            raise ConfigError(
                f"{where}: two rows give item id {item_id!r}: {_row_label(first_split, first_row)} ({first_name}) and "
                f"{_row_label(split, row)} ({name}); remove the duplicate row (each image once per annotation set)")
        seen[item_id] = (split, row, name)


def _row_label(split: str, row: int) -> str:
    return f"{split} row {row}" if split else f"row {row}"
