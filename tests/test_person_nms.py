"""The depth stage's batched greedy NMS (stages/depth/person_boxes.py) against torchvision's `nms`, image by image,
on random boxes dense enough that suppression chains form; and the chain that one-round matrix NMS gets wrong."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms

from shardprep.stages.depth.person_boxes import Overlaps, greedy_nms, suppressions


def random_boxes(generator: torch.Generator, images: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes of 20-120 px around centres in a 300 px square (many overlaps, as a detector's candidates) and
    continuous random scores (no ties, whose order NMS leaves open)."""
    centre = torch.rand(images, count, 2, generator=generator) * 300
    size = 20 + torch.rand(images, count, 2, generator=generator) * 100
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    return boxes, torch.rand(images, count, generator=generator)


@pytest.mark.parametrize("threshold", [0.3, 0.6])
def test_batched_greedy_nms_keeps_what_torchvision_keeps_in_each_image(threshold: float):
    generator = torch.Generator().manual_seed(3)
    boxes, scores = random_boxes(generator, images=4, count=400)
    valid = torch.rand(4, 400, generator=generator) > 0.2
    valid[3] = False  # an image without candidates
    scores, order = scores.masked_fill(~valid, -1.0).sort(dim=1, descending=True)
    boxes, valid = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4)), torch.gather(valid, 1, order)

    kept = greedy_nms(boxes, valid, threshold)

    for image in range(4):
        expected = nms(boxes[image][valid[image]], scores[image][valid[image]], threshold)
        ours = torch.nonzero(kept[image]).flatten()
        assert ours.tolist() == expected.tolist()  # valid candidates come first, so positions agree
    assert not kept[3].any()
    assert 5 < int(kept[:3].sum()) < int(valid.sum())  # something was suppressed, something kept


def test_a_box_suppressed_by_a_suppressed_box_is_kept():
    """A overlaps B, B overlaps C, A does not overlap C: greedy NMS keeps A and C (one round of matrix NMS, which
    lets every box suppress, would drop C)."""
    boxes = torch.tensor([[[0.0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]]])
    kept = greedy_nms(boxes, torch.ones(1, 3, dtype=torch.bool), 0.3)
    assert kept.tolist() == [[True, False, True]]


def test_compiled_overlaps_equal_eager_for_changing_candidate_counts():
    """`Overlaps(compile=True)` (inductor, on the CPU here) gives `suppressions`' relation for batches whose
    candidate counts differ (the shapes are dynamic: one compilation serves them)."""
    generator = torch.Generator().manual_seed(5)
    compiled = Overlaps(compile=True)
    for images, count in ((2, 50), (3, 77), (2, 120)):
        boxes, scores = random_boxes(generator, images, count)
        order = scores.argsort(dim=1, descending=True)
        boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
        assert torch.equal(compiled(boxes, 0.6), suppressions(boxes, 0.6))
