"""Which detected box is the annotated person.

Rule: among person boxes scoring at least the threshold and at least 1 px wide and high, take the one that overlaps
the annotated person's box most (IoU; ties go to the higher score), and none if no box overlaps it. When the row has
no usable box (zero area, e.g. an all-zero annotation row), take the highest-scoring box. On single-person datasets
both give the same box; on multi-person ones (one row per person) the IoU rule picks the row's person.
"""

from __future__ import annotations

import numpy as np

MIN_SIDE_PX = 1.0


def box_area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)


def iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each of `boxes` (n, 4) with one `box` (4,), all xyxy."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    low = np.maximum(boxes[:, :2], box[:2])
    high = np.minimum(boxes[:, 2:], box[2:4])
    inter = (high - low).clip(0).prod(axis=1)
    union = box_area(boxes) + box_area(box)[0] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def select_person(boxes: np.ndarray, scores: np.ndarray, annotated: np.ndarray | None,
                  score_threshold: float) -> np.ndarray | None:
    """The chosen box as (5,) [x1, y1, x2, y2, score], or None when no box qualifies (see the module's rule)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    sides = boxes[:, 2:] - boxes[:, :2]
    keep = (scores >= score_threshold) & (sides >= MIN_SIDE_PX).all(axis=1)
    if not keep.any():
        return None
    boxes, scores = boxes[keep], scores[keep]
    if annotated is not None and box_area(annotated)[0] > 0:
        overlap = iou(boxes, np.asarray(annotated, dtype=np.float64))
        if overlap.max() <= 0:
            return None
        best = np.lexsort((-scores, -overlap))[0]
    else:
        best = int(np.argmax(scores))
    return np.append(boxes[best], scores[best])
