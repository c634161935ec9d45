"""Person boxes from a point-based dense detection head (RTMDet's), decoded for the whole batch at once on the device.

mmdet's `predict_by_feat` decodes one image at a time over all 80 classes: thresholding, a top-k over every
(position, class) pair per level, box decoding and class-wise NMS, with host syncs in between: more time than the
detector's forward (docs/depth.md). The stage only ever uses the person class, so this module runs mmdet's same
steps on that class alone, batched:

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

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shardprep.runtime.errors import ConfigError
from shardprep.stages.depth.cuda_graphs import GraphCache


# Dense heads whose outputs are (class logits, point distances) per level, as `PersonBoxes` decodes them.
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


class PersonBoxes:
    """Per image, person boxes (n, 4) xyxy in the network input's pixels and their scores (n,), float32 on the host,
    best first, from the head's outputs.

    With `cuda_graphs`, the decoding and the first `blocks` blocks of the NMS walk (`first_survivors`) are replayed
    from one CUDA graph: a few hundred small ops of the prepare thread become one launch, and the host waits once
    a batch. A batch whose walk needs more blocks (not finished: longer chains of overlaps than the graph's blocks
    decide) is decoded again without the graph, to the end; the answer is the same either way.
    """

    def __init__(self, head: Any, decoding: PersonDecoding, cuda_graphs: bool = False, blocks: int = 12) -> None:
        self.head, self.decoding = head, decoding
        self.replays = GraphCache(partial(self._best, blocks), "person decoding") if cuda_graphs else None
        self.batches = self.decoded_again = 0  # how often the graph's blocks were too few (the benchmark says)

    def __call__(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                 resized: list[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """cls_scores[level] (B, classes, H, W) logits and bbox_preds[level] (B, 4, H, W) distances, as the head's
        forward gives them; `resized[b]` is image b's (height, width) inside the padded input."""
        limits = torch.tensor([[w, h, w, h] for h, w in resized], dtype=torch.float32, device=cls_scores[0].device)
        tensors = (*cls_scores, *bbox_preds, limits)
        rows, counts = self.replays(*tensors) if self.replays is not None else self._best(None, *tensors)
        counts = counts.cpu().numpy()
        self.batches += 1
        if (counts < 0).any():
            self.decoded_again += 1
            rows, counts = self._best(None, *tensors)
            counts = counts.cpu().numpy()
        rows = rows.cpu().numpy()  # one copy to the host; the split into images is numpy's
        return [(image[:count, :4], image[:count, 4]) for image, count in zip(rows, counts)]

    def _best(self, blocks: int | None, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, k, 5) each image's first survivors (xyxy, score), k = min(max_per_img, candidates), and (B,) how
        many of them are real, -1 for an image whose walk `blocks` did not finish. Fixed shapes, no host sync
        unless blocks is None (walk to the end)."""
        levels = (len(tensors) - 1) // 2
        boxes, scores, valid = candidates(self.head, tensors[:levels], tensors[levels:-1], tensors[-1], self.decoding)
        kept, finished = first_survivors(boxes, valid, self.decoding.iou_threshold, self.decoding.max_per_img,
                                         blocks=blocks)
        count = kept.shape[1]
        position = torch.arange(count, device=kept.device)
        first = torch.where(kept, position, count).topk(min(self.decoding.max_per_img, count), dim=1,
                                                         largest=False).values
        table = torch.cat([torch.cat([boxes, scores[..., None]], dim=-1), boxes.new_zeros((len(boxes), 1, 5))], dim=1)
        rows = torch.gather(table, 1, first[..., None].expand(-1, -1, 5))
        return rows, torch.where(finished, kept.sum(dim=1), -1)


def candidates(head: Any, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
               limits: torch.Tensor, decoding: PersonDecoding) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's person candidates, as mmdet's decoding finds them (module docstring), by descending score
    (ties in candidate order), the valid ones first: boxes (B, N, 4) xyxy, scores (B, N), valid (B, N).
    `limits` (B, 4) is each image's (w, h, w, h) inside the padded input. Fixed shapes, no host sync."""
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
    boxes = torch.minimum(boxes.clamp(min=0), limits[:, None, :])
    valid = scores > decoding.score_thr
    if decoding.min_bbox_size >= 0:  # e.g. candidates whose box lies in the padding, clipped to nothing
        valid &= (boxes[..., 2:] - boxes[..., :2] > decoding.min_bbox_size).all(dim=-1)
    scores, order = scores.masked_fill(~valid, -1.0).sort(dim=1, descending=True, stable=True)
    return torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4)), scores, torch.gather(valid, 1, order)


def first_survivors(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float, limit: int, block: int = 64,
                    rounds: int = 16, blocks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool: in each image, the first `limit` boxes that greedy NMS keeps, and (B,) whether the image's walk
    finished. boxes (B, N, 4) xyxy, each image's by descending score; `valid` (B, N) the candidates (the others are
    neither kept nor suppress). `blocks`: walk that many blocks (fixed shapes, no host sync: a CUDA graph can hold
    it), or None: until every walk has finished (one host sync a block).

    Greedy NMS keeps a box iff no kept box before it overlaps it. The walk decides `block` boxes of every image at
    once: the first boxes that are still open (neither decided nor overlapped by a survivor). Among them, starting
    from all kept, each round re-decides every box from the previous round's choice (Cluster-NMS, Zheng et al.
    2021): after r rounds the first r + 1 are right, and all are once a round changes nothing (greedy NMS's answer
    is the one fixed point). After `rounds` rounds the block's right ones are decided, the others stay open for the
    next block; the new survivors close every box they overlap. A walk ends when its image has `limit` survivors or
    no open boxes: a few blocks, where torchvision's and mmcv's NMS compute every pair of candidates and walk all of
    them in one thread block.

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
    slot_decided = position[:size] <= rounds  # the slots right after `rounds` rounds, converged or not
    walked = 0
    while blocks is None or walked < blocks:
        # The first `block` open boxes of each image that still needs survivors, in order; `count` pads.
        first = torch.where(open_ & (found < limit)[:, None], position, count).topk(size, dim=1, largest=False).values
        taken = first < count
        if blocks is None and not bool(taken.any()):
            break
        candidates = torch.gather(boxes, 1, first[..., None].expand(-1, -1, 5))
        overlapped = _overlaps(candidates, boxes, iou_threshold)  # (B, block, N + 1)
        inside = torch.gather(overlapped, 2, first[:, None, :].expand(-1, size, -1)).triu_(diagonal=1)
        chosen = previous = taken
        for _ in range(rounds):
            previous, chosen = chosen, taken & ~(inside & chosen[:, :, None]).any(dim=1)
        decided = taken & ((chosen == previous).all(dim=1, keepdim=True) | slot_decided)
        survivors = chosen & decided
        kept.scatter_(1, first, survivors)  # these were open, hence not kept yet; the padding gets False
        open_.scatter_(1, first, taken & ~decided)
        open_ &= ~(overlapped & survivors[:, :, None]).any(dim=1)
        found += survivors.sum(dim=1)
        walked += 1
    finished = ~(open_ & (found < limit)[:, None]).any(dim=1)
    return (kept & (kept.cumsum(dim=1) <= limit))[:, :count], finished


def _overlaps(first: torch.Tensor, second: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """(B, M, N) bool: IoU of first[:, m] and second[:, n] above the threshold, for boxes (B, ., 5) xyxy + area,
    computed as torchvision's and mmcv's NMS kernels do (intersection over the sum of the areas less the
    intersection, no +1 pixel offset)."""
    low = torch.maximum(first[:, :, None, :2], second[:, None, :, :2])
    high = torch.minimum(first[:, :, None, 2:4], second[:, None, :, 2:4])
    size = (high - low).clamp_(min=0)
    inter = size[..., 0] * size[..., 1]
    return inter / (first[:, :, None, 4] + second[:, None, :, 4] - inter) > iou_threshold
