"""Analytic tests of every coordinate transform of the depth stage (to 1e-3 px), and of the pure helpers."""

from __future__ import annotations

import numpy as np
import pytest

from shardprep.stages.depth.geometry import Letterbox, TopdownCrop, depth_input_size, disk_offsets, pixel_of
from shardprep.stages.depth.keypoints import coco_to_h36m
from shardprep.stages.depth.selection import iou, select_person

TOL = 1e-3


def test_letterbox_sizes_and_boxes_back():
    wide = Letterbox.fit((1000, 2000), 640)  # (H, W)
    assert wide.resized == (320, 640)
    np.testing.assert_allclose(wide.boxes_to_image(np.array([[32.0, 16.0, 64.0, 32.0]])), [[100, 50, 200, 100]],
                               atol=TOL)
    tall = Letterbox.fit((1002, 1000), 640)
    assert tall.resized == (640, 639)  # 1000 * 640 / 1002 = 638.7 -> 639, as mmcv rounds
    np.testing.assert_allclose(tall.scale_xy, [639 / 1000, 640 / 1002])
    # Boxes reaching into the padding are clipped to the frame.
    np.testing.assert_allclose(wide.boxes_to_image(np.array([[-10.0, 300.0, 700.0, 400.0]])),
                               [[0, 937.5, 2000, 1000]], atol=TOL)


def test_topdown_crop_analytic():
    crop = TopdownCrop.from_box(np.array([100.0, 200.0, 300.0, 400.0]), (192, 256), padding=1.25)
    np.testing.assert_allclose(crop.center, [200, 300])
    np.testing.assert_allclose(crop.scale, [250, 250 / 0.75])  # 250 px wide fixed to the 3:4 input
    np.testing.assert_allclose(crop.to_crop(np.array([[200.0, 300.0], [325.0, 300.0]])), [[96, 128], [192, 128]],
                               atol=TOL)
    np.testing.assert_allclose(crop.to_image(np.array([[0.0, 0.0]])), [[75.0, 300 - 500 / 3]], atol=TOL)
    points = np.random.default_rng(0).uniform(-50, 500, size=(17, 2))
    np.testing.assert_allclose(crop.to_image(crop.to_crop(points)), points, atol=TOL)
    tall = TopdownCrop.from_box(np.array([0.0, 0.0, 100.0, 400.0]), (192, 256), padding=1.0)
    np.testing.assert_allclose(tall.scale, [300, 400])  # height wins: width grows to 3/4 of it


@pytest.mark.parametrize(("size", "expected"), [((1002, 1000), (518, 518)), ((1080, 1920), (518, 924)),
                                                ((480, 640), (518, 686)), ((2048, 2048), (518, 518))])
def test_depth_input_size_native(size, expected):
    assert depth_input_size(size) == expected


def test_pixel_of_clips_and_flags():
    pixels, inside = pixel_of(np.array([[10.4, 20.6], [-0.6, 5.0], [99.4, 49.49], [150.0, -3.0], [-0.5, 49.5]]),
                              (50, 100))
    assert pixels.tolist() == [[10, 21], [0, 5], [99, 49], [99, 0], [0, 49]]
    assert inside.tolist() == [True, False, True, False, False]


def test_disk_offsets():
    assert disk_offsets(0).tolist() == [[0, 0]]
    offsets = disk_offsets(3)
    assert len(offsets) == 29 and offsets[0].tolist() == [0, 0]
    assert set(map(tuple, offsets)) == {(x, y) for x in range(-3, 4) for y in range(-3, 4) if x * x + y * y <= 9}


def test_coco_to_h36m_hand_written():
    coco = np.arange(34, dtype=np.float64).reshape(17, 2)  # joint j at (2j, 2j + 1)
    h36m = coco_to_h36m(coco)
    assert h36m[0].tolist() == [23.0, 24.0]     # pelvis: mean of hips 11 (22, 23) and 12 (24, 25)
    assert h36m[8].tolist() == [11.0, 12.0]     # thorax: mean of shoulders 5 (10, 11) and 6 (12, 13)
    assert h36m[7].tolist() == [17.0, 18.0]     # spine: mean of pelvis and thorax
    assert h36m[10].tolist() == [3.0, 4.0]      # head: mean of eyes 1 (2, 3) and 2 (4, 5)
    assert h36m[9].tolist() == [0.0, 1.0]       # nose
    assert h36m[1].tolist() == [24.0, 25.0]     # right hip = COCO 12
    assert h36m[3].tolist() == [32.0, 33.0]     # right foot = COCO right ankle 16
    assert h36m[13].tolist() == [18.0, 19.0]    # left wrist = COCO 9
    assert h36m[16].tolist() == [20.0, 21.0]    # right wrist = COCO 10
    scores = coco_to_h36m(np.linspace(0, 1.6, 17)[:, None])[:, 0]
    np.testing.assert_allclose(scores[[0, 8, 10]], [1.15, 0.55, 0.15])


def test_select_person_rule():
    boxes = np.array([[0, 0, 10, 10], [100, 100, 200, 300], [90, 90, 210, 310], [5, 5, 5.5, 50]], dtype=float)
    scores = np.array([0.9, 0.5, 0.4, 0.95])
    annotated = np.array([100.0, 100.0, 200.0, 300.0])
    np.testing.assert_allclose(select_person(boxes, scores, annotated, 0.3), [100, 100, 200, 300, 0.5])
    # No usable annotated box (all-zero row): highest score among boxes >= 1 px wide.
    np.testing.assert_allclose(select_person(boxes, scores, np.zeros(4), 0.3), [0, 0, 10, 10, 0.9])
    assert select_person(boxes, scores, np.array([500.0, 500, 600, 600]), 0.3) is None  # nothing overlaps
    assert select_person(boxes, scores, annotated, 0.99) is None
    assert select_person(np.zeros((0, 4)), np.zeros(0), annotated, 0.0) is None
    np.testing.assert_allclose(iou(boxes[:2], np.array([0.0, 0, 10, 20])), [0.5, 0.0])
