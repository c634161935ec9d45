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
lose a top-k or `max_per_img` place to another class. The NMS is torchvision's: mmcv's op keeps Python's global
lock while it waits for the GPU, which stalled every other thread of the worker (most of the lock's time in a
profile of the stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
                 resized: list[tuple[int, int]], decoding: PersonDecoding) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: person boxes (n, 4) xyxy in the network input's pixels and their scores (n,), best first.

    cls_scores[level] (B, classes, H, W) logits and bbox_preds[level] (B, 4, H, W) distances, as the head's forward
    gives them; `resized[b]` is image b's (height, width) inside the padded input.
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
    image, candidate = torch.nonzero(valid, as_tuple=True)
    out: list[tuple[torch.Tensor, torch.Tensor]] = [(boxes.new_zeros((0, 4)), scores.new_zeros(0))] * batch
    if image.numel() == 0:
        return out
    boxes, scores = boxes[image, candidate], scores[image, candidate]
    order = _nms_per_image(boxes, scores, image, decoding.iou_threshold)
    kept, owner = torch.cat([boxes[order], scores[order, None]], dim=1), image[order]
    # The survivors of all images come by descending score; a stable sort by image keeps that order.
    owner, by_image = torch.sort(owner, stable=True)
    kept, owner = kept[by_image].cpu(), owner.cpu()
    counts = torch.bincount(owner, minlength=batch).tolist()
    start = 0
    for b, count in enumerate(counts):
        rows = kept[start:start + min(count, decoding.max_per_img)]
        out[b] = (rows[:, :4], rows[:, 4])
        start += count
    return out


def _nms_per_image(boxes: torch.Tensor, scores: torch.Tensor, image: torch.Tensor, iou_threshold: float,
                   ) -> torch.Tensor:
    """Indices of the boxes that survive NMS within their image, by descending score: one NMS over all images, each
    image's boxes shifted past the others' (mmcv's `batched_nms` rule, so no two images' boxes overlap)."""
    from torchvision.ops import nms

    offsets = image.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
