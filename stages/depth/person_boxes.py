"""Person boxes from a point-based dense detection head (RTMDet's), decoded for the whole batch at once on the device.

mmdet's `predict_by_feat` decodes one image at a time over all 80 classes: thresholding, a top-k over every
(position, class) pair per level, box decoding and class-wise NMS, with host syncs in between. On a batch of 32
frames that took 3.8 ms a frame on an H100, more than the detector's forward. The stage only ever uses the person
class, so this module runs mmdet's same steps on that class alone, batched:

  per level: sigmoid score of the person channel, `score > score_thr`, the `nms_pre` best candidates;
  boxes: prior point -/+ the predicted distances (already in pixels), clipped to the resized, unpadded image,
         those not wider and taller than `min_bbox_size` dropped;
  NMS per image, of which the `max_per_img` best survivors.

The boxes are those of mmdet's decoding restricted to persons; the one difference is that person candidates never
lose a top-k or `max_per_img` place to another class. The NMS is batched tensor ops that stop at `max_per_img`
survivors (`first_survivors`): mmcv's op keeps Python's global lock while it waits for the GPU, which stalled every
other thread of the worker, and both mmcv's and torchvision's walk every candidate in one thread block, the stage's
largest GPU cost with an untrained detector's thousands of candidates an image (docs/depth.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shardprep.runtime.errors import ConfigError


# Dense heads whose outputs are (class logits, point distances) per level, as `person_boxes` decodes them.
SUPPORTED_HEADS = ("RTMDetHead", "RTMDetSepBNHead")


def check_detector_config(path: Path) -> None:
    """Before submission: the detector config's head is one this decoding reproduces (read from the config file,
    no model built)."""
    from mmengine.config import Config

    head = Config.fromfile(str(path)).model.get("bbox_head") or {}
    if head.get("type") not in SUPPORTED_HEADS:
        raise ConfigError(f"stage.detector.config={path}: its head {head.get('type')!r} is not supported; the stage "
                          f"decodes {', '.join(SUPPORTED_HEADS)} (RTMDet configs), or use stage.detector.kind=gt")


@dataclass(frozen=True)
class PersonDecoding:
    """What decoding needs from the head and its test_cfg."""

    person: int
    score_thr: float
    nms_pre: int
    iou_threshold: float
    max_per_img: int
    min_bbox_size: float  # boxes no wider or taller than this are dropped before NMS; < 0: keep all

    @classmethod
    def of(cls, head: Any, test_cfg: Any, person: int) -> PersonDecoding:
        """Check that `head` is a head this decoding reproduces (sigmoid classes, distance-to-point boxes, no
        objectness factor: RTMDet's) and read its settings."""
        coder = type(getattr(head, "bbox_coder", None)).__name__
        points = type(getattr(head, "prior_generator", None)).__name__
        if coder != "DistancePointBBoxCoder" or points != "MlvlPointGenerator" or not head.use_sigmoid_cls \
                or getattr(head, "with_objectness", False):
            raise ConfigError(f"detector head {type(head).__name__} ({coder}, {points}) is not supported: the stage "
                              "decodes RTMDet-style heads (sigmoid classes, point priors, distance boxes)")
        if not 0 <= person < head.cls_out_channels:
            raise ConfigError(f"stage.detector.person_label={person} is not a class of this detector")
        nms = test_cfg.get("nms", {})
        if nms.get("type", "nms") != "nms":
            raise ConfigError(f"detector test_cfg.nms.type={nms.get('type')!r}: only plain nms is supported")
        return cls(person, float(test_cfg.get("score_thr", 0.0)), int(test_cfg.get("nms_pre", -1)),
                   float(nms.get("iou_threshold", 0.5)), int(test_cfg.get("max_per_img", 100)),
                   float(test_cfg.get("min_bbox_size", -1)))


def person_boxes(head: Any, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                 resized: list[tuple[int, int]], decoding: PersonDecoding) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image: person boxes (n, 4) xyxy in the network input's pixels and their scores (n,), float32 on the
    host, best first.

    cls_scores[level] (B, classes, H, W) logits and bbox_preds[level] (B, 4, H, W) distances, as the head's forward
    gives them; `resized[b]` is image b's (height, width) inside the padded input.
    """
    sizes = [tuple(score.shape[-2:]) for score in cls_scores]
    priors = head.prior_generator.grid_priors(sizes, dtype=torch.float32, device=cls_scores[0].device)
    level_scores, level_boxes = [], []
    for logits, distances, points in zip(cls_scores, bbox_preds, priors):
        scores = logits[:, decoding.person].float().flatten(1).sigmoid()  # (B, H*W), position order as mmdet's
        distances = distances.float().flatten(2).transpose(1, 2)  # (B, H*W, 4)
        keep = scores.shape[1] if decoding.nms_pre < 0 else min(decoding.nms_pre, scores.shape[1])
        scores, index = scores.masked_fill(scores <= decoding.score_thr, -1.0).topk(keep, dim=1)
        picked = torch.gather(distances, 1, index[..., None].expand(-1, -1, 4))
        centre = points[index, :2]  # (B, keep, 2) x, y
        level_scores.append(scores)
        level_boxes.append(torch.cat([centre - picked[..., :2], centre + picked[..., 2:]], dim=-1))
    scores, boxes = torch.cat(level_scores, dim=1), torch.cat(level_boxes, dim=1)
    limits = torch.tensor([[w, h, w, h] for h, w in resized], dtype=boxes.dtype, device=boxes.device)
    boxes = torch.minimum(boxes.clamp(min=0), limits[:, None, :])
    valid = scores > decoding.score_thr
    if decoding.min_bbox_size >= 0:  # e.g. candidates whose box lies in the padding, clipped to nothing
        valid &= (boxes[..., 2:] - boxes[..., :2] > decoding.min_bbox_size).all(dim=-1)
    # Each image's candidates by descending score (ties in candidate order), the valid ones first.
    scores, order = scores.masked_fill(~valid, -1.0).sort(dim=1, descending=True, stable=True)
    boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
    valid = torch.gather(valid, 1, order)
    count = int(valid.sum(dim=1).max())
    boxes, scores, valid = boxes[:, :count], scores[:, :count], valid[:, :count]
    kept = first_survivors(boxes, valid, decoding.iou_threshold, decoding.max_per_img)
    # One copy to the host; the split into images is numpy's (a torch op per image costs more host time).
    rows = torch.cat([boxes, scores[..., None]], dim=-1)[kept].cpu().numpy()  # image by image, each best first
    parts = np.split(rows, np.cumsum(kept.sum(dim=1).cpu().numpy())[:-1])
    return [(part[:, :4], part[:, 4]) for part in parts]


def first_survivors(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float, limit: int,
                    block: int = 64) -> torch.Tensor:
    """(B, N) bool: in each image, the first `limit` boxes that greedy NMS keeps. boxes (B, N, 4) xyxy, each
    image's by descending score; `valid` (B, N) the candidates (the others are neither kept nor suppress).

    Greedy NMS keeps a box iff no kept box before it overlaps it. The walk decides `block` boxes of every image at
    once: the first boxes that are still open (neither decided nor overlapped by a survivor). Among them, starting
    from all kept, each round re-decides every box from the previous round's choice; the first k are right after k
    rounds, so the rounds reach greedy NMS's one answer and stop when a round changes nothing (Cluster-NMS, Zheng
    et al. 2021). The new survivors then close every box they overlap. The walk ends when every image has `limit`
    survivors or no open boxes: a few blocks, where torchvision's and mmcv's NMS compute every pair of candidates
    and walk all of them in one thread block.

    Each op is a kernel launch and host time of the prepare thread, so a block takes few: column N is a padding
    box (zero area: it overlaps nothing) that a block's missing boxes point to, the areas are computed once, and
    the overlaps among a block are read from those of the block with all boxes.
    """
    batch, count = valid.shape
    boxes = torch.cat([boxes, boxes.new_zeros((batch, 1, 4))], dim=1)  # column N: the padding box
    areas = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    boxes = torch.cat([boxes, areas[..., None]], dim=-1)  # (B, N + 1, 5) xyxy + area
    position = torch.arange(count + 1, device=valid.device)
    open_ = torch.cat([valid, valid.new_zeros((batch, 1))], dim=1)
    kept = torch.zeros_like(open_)
    found = torch.zeros(batch, dtype=torch.long, device=valid.device)
    size = min(block, count + 1)
    while True:
        # The first `block` open boxes of each image that still needs survivors, in order; `count` pads.
        first = torch.where(open_ & (found < limit)[:, None], position, count).topk(size, dim=1, largest=False).values
        taken = first < count
        if not bool(taken.any()):
            return (kept & (kept.cumsum(dim=1) <= limit))[:, :count]
        candidates = torch.gather(boxes, 1, first[..., None].expand(-1, -1, 5))
        overlapped = _overlaps(candidates, boxes, iou_threshold)  # (B, block, N + 1)
        inside = torch.gather(overlapped, 2, first[:, None, :].expand(-1, size, -1)).triu_(diagonal=1)
        chosen = taken
        while True:
            again = taken & ~(inside & chosen[:, :, None]).any(dim=1)
            if torch.equal(again, chosen):
                break
            chosen = again
        kept.scatter_(1, first, chosen)  # these were open, hence not kept yet; the padding gets False
        open_.scatter_(1, first, False)
        open_ &= ~(overlapped & chosen[:, :, None]).any(dim=1)
        found += chosen.sum(dim=1)


def _overlaps(first: torch.Tensor, second: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """(B, M, N) bool: IoU of first[:, m] and second[:, n] above the threshold, for boxes (B, ., 5) xyxy + area,
    computed as torchvision's and mmcv's NMS kernels do (intersection over the sum of the areas less the
    intersection, no +1 pixel offset)."""
    low = torch.maximum(first[:, :, None, :2], second[:, None, :, :2])
    high = torch.minimum(first[:, :, None, 2:4], second[:, None, :, 2:4])
    size = (high - low).clamp_(min=0)
    inter = size[..., 0] * size[..., 1]
    return inter / (first[:, :, None, 4] + second[:, None, :, 4] - inter) > iou_threshold
