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


def _sorted_candidates(seed: int, images: int = 4, count: int = 300) -> tuple[torch.Tensor, ...]:
    """boxes (B, N, 4), scores (B, N), valid (B, N) by descending score, valid first, as `candidates` gives them;
    image 2 without candidates, image 3 with five."""
    generator = torch.Generator().manual_seed(seed)
    boxes = _clustered_boxes(generator, images, count)
    scores = torch.rand(images, count, generator=generator)
    valid = torch.rand(images, count, generator=generator) > 0.2
    valid[2] = False
    valid[3, 5:] = False
    order = scores.masked_fill(~valid, -1).argsort(dim=1, descending=True)
    return (torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4)), torch.gather(scores, 1, order),
            torch.gather(valid, 1, order))


def _torchvision_survivors(boxes: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, threshold: float,
                           limit: int) -> list[list[int]]:
    survivors = []
    for image in range(len(boxes)):
        candidates = valid[image].nonzero()[:, 0]
        survivors.append(candidates[nms(boxes[image, candidates], scores[image, candidates], threshold)][:limit])
    return [indices.tolist() for indices in survivors]


@pytest.mark.parametrize("limit", [3, 40, 10**6])
@pytest.mark.parametrize("block", [7, 256, 1000])  # 1000: one block holds every candidate
@pytest.mark.parametrize("rounds", [1, 8])  # 1: most blocks leave boxes undecided for the next
def test_first_survivors_are_torchvisions_nms_survivors(limit: int, block: int, rounds: int):
    boxes, scores, valid = _sorted_candidates(limit + block)
    threshold = 0.5

    kept, finished = first_survivors(boxes, valid, threshold, limit, block, rounds)

    assert finished.all()
    assert [row.nonzero()[:, 0].tolist() for row in kept] == _torchvision_survivors(boxes, scores, valid,
                                                                                    threshold, limit)
    assert kept[:2].sum() > 0 and not kept[2].any()


def test_a_walk_of_fixed_blocks_says_whether_it_finished():
    """blocks=K (what a CUDA graph holds): enough blocks give the full answer; too few leave the unfinished images'
    walks flagged, their survivors so far the first of the full answer."""
    boxes, scores, valid = _sorted_candidates(0)
    expected = _torchvision_survivors(boxes, scores, valid, 0.5, 10**6)

    kept, finished = first_survivors(boxes, valid, 0.5, 10**6, block=16, blocks=40)
    assert finished.all() and [row.nonzero()[:, 0].tolist() for row in kept] == expected

    kept, finished = first_survivors(boxes, valid, 0.5, 10**6, block=16, blocks=1)
    assert finished.tolist() == [False, False, True, True]
    for row, survivors in zip(kept, expected):
        assert row.nonzero()[:, 0].tolist() == survivors[:int(row.sum())]


def test_a_batch_without_candidates_keeps_nothing():
    kept, finished = first_survivors(torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.bool), 0.5, 100)
    assert kept.shape == (3, 0) and finished.all()
