"""A tiny 3DPW in the release's layout, written the way the release is, for the convert stage's tests.

- `sequenceFiles/{train,validation,test}/<sequence>.pkl`: pickles as Python 2's cPickle (protocol 2) wrote the
  release with numpy 1.x: Python-2 `str` as SHORT_BINSTRING/BINSTRING (not unicode), arrays rebuilt by
  `numpy.core.multiarray._reconstruct` with their data as a byte string and their dtype pickled by
  `numpy.dtype('f8', 0, 1)` plus its state tuple (version 3). The opcodes are written here by hand
  (`Py2Pickle`), since Python 3's pickler writes bytes through `_codecs.encode` and text as unicode.
  Fields as the release's readme lists them: sequence, genders, betas, poses, trans, jointPositions (per actor
  frames x 72, world m), poses2D, img_frame_ids, cam_poses (frames x 4 x 4 world to camera), campose_valid (per actor,
  some frames unset), cam_intrinsics.
- `imageFiles/<sequence>/image_<NNNNN>.jpg`: frame i one grey level (`raw_h36m.grey(i)`).
Seeded: the same call writes the same sequences.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from data.raw_h36m import HEIGHT, WIDTH, grey

# Sequence -> (release split, actors, frames).
SEQUENCES = {"courtyard_arguing_00": ("train", 2, 6), "courtyard_drinking_00": ("validation", 1, 4),
             "downtown_walking_00": ("test", 2, 5)}
FOCAL = 60.0


class Py2Pickle:
    """Protocol-2 opcodes as Python 2's cPickle emits them for dicts, lists, tuples, str, int, float, bool, None and
    numpy 1.x arrays (no memo: a valid stream the unpickler reads the same way)."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")

    def dumps(self, value: object) -> bytes:
        self.save(value)
        self.out += b"."
        return bytes(self.out)

    def save(self, value: object) -> None:
        if value is None:
            self.out += b"N"
        elif isinstance(value, bool):
            self.out += b"\x88" if value else b"\x89"
        elif isinstance(value, int):
            self.out += b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)
        elif isinstance(value, float):
            self.out += b"G" + struct.pack(">d", value)
        elif isinstance(value, (str, bytes)):
            self.string(value.encode("latin1") if isinstance(value, str) else value)
        elif isinstance(value, np.ndarray):
            self.array(value)
        elif isinstance(value, tuple):
            self.tuple(value)
        elif isinstance(value, list):
            self.out += b"]("
            for element in value:
                self.save(element)
            self.out += b"e"
        elif isinstance(value, dict):
            self.out += b"}("
            for key, element in value.items():
                self.save(key)
                self.save(element)
            self.out += b"u"
        else:
            raise TypeError(type(value))

    def string(self, data: bytes) -> None:
        self.out += (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data

    def tuple(self, values: tuple) -> None:
        if len(values) == 0:
            self.out += b")"
            return
        if len(values) > 3:
            self.out += b"("
        for value in values:
            self.save(value)
        self.out += b"t" if len(values) > 3 else {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(values)]

    def global_(self, module: str, name: str) -> None:
        self.out += f"c{module}\n{name}\n".encode()

    def array(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.tuple((0,))
        self.save("b")
        self.out += b"\x87R("  # _reconstruct(ndarray, (0,), 'b'), then its state (1, shape, dtype, False, data)
        self.save(1)
        self.tuple(array.shape)
        self.dtype(array.dtype)
        self.save(False)
        self.string(array.tobytes())
        self.out += b"tb"

    def dtype(self, dtype: np.dtype) -> None:
        self.global_("numpy", "dtype")
        self.tuple((f"{dtype.kind}{dtype.itemsize}", 0, 1))
        self.out += b"R"
        order = "|" if dtype.itemsize == 1 else "<"
        self.tuple((3, order, None, None, None, -1, -1, 0))
        self.out += b"b"


def rotation(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(-0.3, 0.3)
    return np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])


def sequence_content(name: str, actors: int, frames: int, rng: np.random.Generator) -> dict:
    poses = np.zeros((frames, 4, 4))
    for i in range(frames):
        poses[i, :3, :3] = rotation(rng)
        poses[i, :3, 3] = [rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), 4.0]
        poses[i, 3, 3] = 1.0
    valid = []
    for actor in range(actors):
        flags = np.ones(frames, dtype=bool)
        flags[actor + 1] = False  # a frame whose camera pose is not aligned for this actor
        valid.append(flags)
    return {
        "sequence": name,
        "genders": ["m", "f"][:actors],
        "betas": [rng.normal(size=10) for _ in range(actors)],
        "poses": [rng.normal(size=(frames, 72)) for _ in range(actors)],
        "trans": [rng.normal(size=(frames, 3)) for _ in range(actors)],
        "jointPositions": [rng.uniform(-0.8, 0.8, (frames, 72)) for _ in range(actors)],
        "poses2D": [rng.uniform(0, 60, (frames, 3, 18)) for _ in range(actors)],
        "img_frame_ids": np.arange(frames, dtype=np.int64) * 2,
        "cam_poses": poses,
        "campose_valid": valid,
        "cam_intrinsics": np.array([[FOCAL, 0, WIDTH / 2 + 0.5], [0, FOCAL * 1.01, HEIGHT / 2 - 0.5], [0, 0, 1]]),
    }


def write_raw_3dpw(root: Path, seed: int = 0) -> Path:
    """The raw tree under `root` and a (17, 24) joint regressor `root/regressor.npy`; returns `root`."""
    rng = np.random.default_rng(seed)
    for name, (split, actors, frames) in SEQUENCES.items():
        folder = root / "sequenceFiles" / split
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.pkl").write_bytes(Py2Pickle().dumps(sequence_content(name, actors, frames, rng)))
        images = root / "imageFiles" / name
        images.mkdir(parents=True)
        for i in range(frames):
            Image.new("RGB", (WIDTH, HEIGHT), (grey(i),) * 3).save(images / f"image_{i:05d}.jpg", quality=95)
    weights = rng.uniform(0, 1, (17, 24)) * (rng.uniform(0, 1, (17, 24)) > 0.7)
    weights[:, 0] += 0.01
    np.save(root / "regressor.npy", weights / weights.sum(axis=1, keepdims=True))
    return root
