"""Human3.6M's `metadata.xml`: which file prefix each (subject, action, subaction) has, the camera ids, and the
camera parameters, decoded as MMPose's `tools/dataset_converters/preprocess_h36m.py` decodes them.

The file (from the release's code package) holds
- `<mapping>`: rows of `<td>` cells; the first row is two blank cells then the subject names (S1 ... S11), each of
  the next 32 rows an action id, a subaction id and, per subject, the sequence's file prefix ("Directions 1");
- `<dbcameras><index2id>`: the four camera ids in camera-index order;
- `<w0>`: one bracketed list of numbers: per camera and subject 6 extrinsic values (3 rotation angles, translation
  in mm), at 6 * (camera * 11 + subject - 1), then per camera 9 intrinsic values (f, c, k1-k3, p1-p2) from index
  264 + 9 * camera.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAPPING_ROWS = 32  # action/subaction rows the converter reads after the header row
SUBJECT_SLOTS = 11  # w0 reserves extrinsics for S1..S11 per camera
EXTRINSIC_VALUES = 6
INTRINSIC_VALUES = 9
INTRINSICS_START = EXTRINSIC_VALUES * SUBJECT_SLOTS * 4
# Frame size per camera (the w0 list does not hold it; the converter's table).
IMAGE_SIZES = {"54138969": (1000, 1002), "55011271": (1000, 1000), "58860488": (1000, 1000),
               "60457274": (1000, 1002)}


@dataclass(frozen=True)
class Sequence:
    subject: str
    action: str  # action id as written ("2")
    subaction: str
    prefix: str  # file name prefix, e.g. "Directions 1"


class H36MMetadata:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            root = ElementTree.parse(path).getroot()
            rows = [[cell.text or "" for cell in row] for row in root.find("mapping")]
            self.camera_ids = [element.text.strip() for element in root.find("dbcameras/index2id")]
            self.w0 = np.array(root.find("w0").text.strip()[1:-1].split(), dtype=np.float64)
        except (ElementTree.ParseError, OSError, AttributeError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a Human3.6M metadata.xml ({type(error).__name__}: {error}); it needs "
                             "<mapping>, <dbcameras><index2id> and <w0>") from None
        self.subjects = rows[0][2:]
        self.sequences: dict[str, list[Sequence]] = {subject: [] for subject in self.subjects}
        for row in rows[1:MAPPING_ROWS + 1]:
            action, subaction, *prefixes = row
            for subject, prefix in zip(self.subjects, prefixes):
                self.sequences[subject].append(Sequence(subject, action, subaction, prefix))

    def camera(self, subject: str, camera_id: str) -> dict[str, Any]:
        """The converter's camera dict: R (3,3), T (3,1) m, c (2,1), f (2,1), k (3,1), p (2,1), w, h, name, id."""
        if camera_id not in self.camera_ids:
            raise ValueError(f"{self.path}: camera {camera_id} is not among <index2id> {self.camera_ids}")
        index = self.camera_ids.index(camera_id)
        number = int(subject.lstrip("S"))
        start = EXTRINSIC_VALUES * (index * SUBJECT_SLOTS + number - 1)
        intrinsic = INTRINSICS_START + INTRINSIC_VALUES * index
        if not 1 <= number <= SUBJECT_SLOTS or intrinsic + INTRINSIC_VALUES > len(self.w0):
            raise ValueError(f"{self.path}: <w0> holds {len(self.w0)} values, too few for camera {camera_id} of "
                             f"{subject} (needs {intrinsic + INTRINSIC_VALUES})")
        angles, translation = self.w0[start:start + 3], self.w0[start + 3:start + 6]
        values = self.w0[intrinsic:intrinsic + INTRINSIC_VALUES]
        width, height = IMAGE_SIZES.get(camera_id, (0, 0))
        return {
            "R": rotation(angles),
            "T": translation.reshape(3, 1) * 0.001,
            "c": values[2:4, None].copy(),
            "f": values[0:2, None].copy(),
            "k": values[4:7, None].copy(),
            "p": values[7:9, None].copy(),
            "w": width,
            "h": height,
            "name": f"camera{index + 1}",
            "id": camera_id,
        }

    def cameras(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every (subject, camera id) of S1..S11, keyed as the converter's cameras.pkl: ('S1', '54138969')."""
        return {(f"S{number}", camera_id): self.camera(f"S{number}", camera_id)
                for number in range(1, SUBJECT_SLOTS + 1) for camera_id in self.camera_ids}


def rotation(angles: np.ndarray) -> np.ndarray:
    """World-to-camera rotation from w0's three angles: the transpose of Rx(-a) Ry(b) Rz(-c), each elementary matrix
    written as H36M's code writes it (sines above the diagonal in Rx and Rz, below in Ry's transpose)."""
    x, y, z = -angles[0], angles[1], -angles[2]
    cx, sx, cy, sy, cz, sz = np.cos(x), np.sin(x), np.cos(y), np.sin(y), np.cos(z), np.sin(z)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return (rx @ ry @ rz).T
