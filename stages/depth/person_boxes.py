"""Person boxes from a point-based dense detection head (RTMDet's), decoded for the whole batch at once on the device.

mmdet's `predict_by_feat` decodes one image at a time over all 80 classes: thresholding, a top-k over every
(position, class) pair per level, box decoding and class-wise NMS, with host syncs in between. On a batch of 32
frames that took 3.8 ms a frame on an H100, more than the detector's forward. The stage only ever uses the person
class, so this module runs mmdet's same steps on that class alone, batched:

  per level: sigmoid score of the person channel, `score > score_thr`, the `nms_pre` best candidates;
  boxes: prior point -/+ the predicted distances (already in pixels), clipped to the resized, unpadded image,
         those not wider and taller than `min_bbox_size` dropped;
  NMS per image (the image index as the class, by mmcv's `batched_nms` offset rule), then the `max_per_img` best.

The boxes are those of mmdet's decoding restricted to persons; the one difference is that person candidates never
lose a top-k or `max_per_img` place to another class.

NMS is greedy NMS run for every image of the batch at once (`greedy_nms`): each image's IoU relation as one
batched tensor op, then the greedy choice as a fixed-point iteration on it. One NMS call over all images with
offset boxes (mmcv's `batched_nms` trick, torchvision's kernel) computed every pair of the whole batch and walked
all of its boxes in one sequential thread block: with a random-weight RTMDet, 76 800 candidates a batch of 32 and the
GPU's largest cost in the stage (docs/depth.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shardprep.runtime.errors import ConfigError

log = logging.getLogger(__name__)


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
                 resized: list[tuple[int, int]], decoding: PersonDecoding,
                 overlaps: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: person boxes (n, 4) xyxy in the network input's pixels and their scores (n,), best first.

    cls_scores[level] (B, classes, H, W) logits and bbox_preds[level] (B, 4, H, W) distances, as the head's forward
    gives them; `resized[b]` is image b's (height, width) inside the padded input. `overlaps`: `suppressions`, or
    a compiled copy of it (`Overlaps`).
    """
    batch = cls_scores[0].shape[0]
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
    out: list[tuple[torch.Tensor, torch.Tensor]] = [(boxes.new_zeros((0, 4)), scores.new_zeros(0))] * batch
    if count == 0:
        return out
    boxes, scores, valid = boxes[:, :count], scores[:, :count], valid[:, :count]
    kept = greedy_nms(boxes, valid, decoding.iou_threshold, overlaps or suppressions)
    kept = kept & (kept.cumsum(dim=1) <= decoding.max_per_img)
    rows = torch.cat([boxes, scores[..., None]], dim=-1)[kept].cpu()  # image by image, each best first
    start = 0
    for b, survivors in enumerate(kept.sum(dim=1).tolist()):
        out[b] = (rows[start:start + survivors, :4], rows[start:start + survivors, 4])
        start += survivors
    return out


def suppressions(boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """(B, N, N) bool: in each image, box i suppresses box j: j comes after i and their IoU exceeds the threshold.
    boxes (B, N, 4) xyxy, each image's in descending score order. IoU as mmcv's and torchvision's NMS compute it
    (intersection over the sum of the areas less the intersection, no +1 pixel offset)."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    low = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    high = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    size = (high - low).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    overlap = inter / (area[:, :, None] + area[:, None, :] - inter) > iou_threshold
    return overlap.triu(diagonal=1)


def greedy_nms(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float,
               overlaps: Callable[[torch.Tensor, float], torch.Tensor] = suppressions) -> torch.Tensor:
    """(B, N) bool: the boxes greedy NMS keeps in each image; boxes (B, N, 4) in descending score order, `valid`
    (B, N) the candidates (the others are neither kept nor suppress).

    Greedy NMS keeps box j iff no kept box before it overlaps it. Starting from every candidate kept, each round
    re-decides every box from the previous round's choice; the first k boxes are right after k rounds, so the rounds
    reach greedy NMS's one answer, and stop when a round changes nothing (a few rounds: the length of the longest
    chain of boxes whose fate hangs on the one before; Cluster-NMS, Zheng et al. 2021). Each round is one batched
    tensor op; the host checks for the fixed point once per round.
    """
    relation = overlaps(boxes, iou_threshold)
    kept = valid
    while True:
        suppressed = (relation & kept[:, :, None]).any(dim=1)
        again = valid & ~suppressed
        if torch.equal(again, kept):
            return kept
        kept = again


class Overlaps:
    """`suppressions` compiled (one fused kernel instead of a dozen passes over B x N x N tensors; shapes dynamic:
    N, the candidates, changes with every batch); if compiling fails (no compiler toolchain for Triton on the node),
    it says so once and runs eager from then on, as the networks do (models.BatchForward)."""

    def __init__(self, compile: bool) -> None:
        self.compiled = torch.compile(suppressions, dynamic=True) if compile else None

    def __call__(self, boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(boxes, iou_threshold)
            except torch._dynamo.exc.TorchDynamoException as error:
                log.warning("torch.compile of the person NMS failed (%s); running it eager from now on "
                            "(stage.detector.compile=false skips the attempt)", str(error).splitlines()[0])
                self.compiled = None
        return suppressions(boxes, iou_threshold)
