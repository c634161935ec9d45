"""The stage's batched person NMS keeps what torchvision's greedy NMS keeps, image by image."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms

from shardprep.stages.depth.person_boxes import first_survivors


def _clustered_boxes(generator: torch.Generator, images: int, count: int) -> torch.Tensor:
    """Boxes around a few centres with jittered sizes: long chains of overlaps, so survivors depend on boxes
    suppressed far earlier (boxes of one block decided by survivors of earlier blocks)."""
    centres = torch.rand(images, 6, 2, generator=generator) * 200
    pick = torch.randint(0, 6, (images, count), generator=generator)
    centre = torch.gather(centres, 1, pick[..., None].expand(-1, -1, 2)) + torch.randn(images, count, 2,
                                                                                      generator=generator) * 6
    half = 8 + torch.rand(images, count, 2, generator=generator) * 20
    return torch.cat([centre - half, centre + half], dim=-1)


@pytest.mark.parametrize("limit", [3, 40, 10**6])
@pytest.mark.parametrize("block", [7, 256, 1000])  # 1000: one block holds every candidate
def test_first_survivors_are_torchvisions_nms_survivors(limit: int, block: int):
    generator = torch.Generator().manual_seed(limit + block)
    images, count, threshold = 4, 300, 0.5
    boxes = _clustered_boxes(generator, images, count)
    scores = torch.rand(images, count, generator=generator)
    valid = torch.rand(images, count, generator=generator) > 0.2
    valid[2] = False  # an image without candidates
    valid[3, 5:] = False  # one with fewer than the limit
    order = scores.masked_fill(~valid, -1).argsort(dim=1, descending=True)
    boxes, scores = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4)), torch.gather(scores, 1, order)
    valid = torch.gather(valid, 1, order)

    kept = first_survivors(boxes, valid, threshold, limit, block)

    for image in range(images):
        candidates = valid[image].nonzero()[:, 0]
        expected = candidates[nms(boxes[image, candidates], scores[image, candidates], threshold)][:limit]
        assert kept[image].nonzero()[:, 0].tolist() == expected.tolist()
    assert kept[:2].sum() > 0 and not kept[2].any()


def test_a_batch_without_candidates_keeps_nothing():
    kept = first_survivors(torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.bool), 0.5, 100)
    assert kept.shape == (3, 0)
