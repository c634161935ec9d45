"""Analytic tests of the depth stage's device-side resampling (torch, no models): letterbox, crop warp, crop and
back through a pose-model double, depth upsample alignment and the disk min/max, to 1e-3 px."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (bash install.sh installs the model stack)")
import torch.nn.functional as F

from shardprep.stages.depth.geometry import TopdownCrop
from shardprep.stages.depth.imageops import letterbox, warp_crops
from shardprep.stages.depth.keypoints import coco_to_h36m
from shardprep.stages.depth.pipeline import estimate_keypoints
from shardprep.stages.depth.sampling import features_at, joint_depths, upsampled_at

TOL = 1e-3


def coordinate_frame(height: int, width: int) -> torch.Tensor:
    """A float 'image' whose channels hold each pixel's own x and y: bilinear resampling of it is exact."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([xs, ys, torch.zeros_like(xs)])


def test_letterbox_maps_coordinates_and_pads_bottom_right():
    frame = coordinate_frame(100, 200)
    batch, boxes = letterbox([frame], 64, 114)
    assert boxes[0].resized == (32, 64)
    assert batch.shape == (1, 3, 64, 64)
    assert torch.all(batch[0, :, 32:, :] == 114)  # a wide frame is padded at the bottom only
    # Input pixel (u, v) samples frame point ((u + 0.5) / r - 0.5, ...), r = 0.32 (interior: no edge clamping).
    u = torch.arange(2, 62, dtype=torch.float32)
    torch.testing.assert_close(batch[0, 0, 10, 2:62], (u + 0.5) / 0.32 - 0.5, atol=TOL, rtol=0)
    v = torch.arange(2, 30, dtype=torch.float32)
    torch.testing.assert_close(batch[0, 1, 2:30, 10], (v + 0.5) / 0.32 - 0.5, atol=TOL, rtol=0)
    uint8, _ = letterbox([torch.full((3, 100, 200), 7, dtype=torch.uint8)], 64, 114)
    assert torch.all(uint8[0, :, :32] == 7)


def test_crop_warp_maps_coordinates_analytically():
    frame = coordinate_frame(480, 640)
    crop = TopdownCrop.from_box(np.array([100.0, 50.0, 300.0, 350.0]), (192, 256), padding=1.25)
    warped = warp_crops([frame], [crop])[0]
    u, v = np.meshgrid(np.arange(192), np.arange(256))
    expected = crop.to_image(np.stack([u.ravel(), v.ravel()], axis=1)).reshape(256, 192, 2)
    interior = (expected[..., 0] > 1) & (expected[..., 0] < 638) & (expected[..., 1] > 1) & (expected[..., 1] < 478)
    assert interior.mean() > 0.9
    np.testing.assert_allclose(warped[0].numpy()[interior], expected[..., 0][interior], atol=TOL)
    np.testing.assert_allclose(warped[1].numpy()[interior], expected[..., 1][interior], atol=TOL)
    # Outside the frame the crop is zero, as cv2.warpAffine's constant border: its corner maps to (-40.625, -37.5).
    corner = TopdownCrop.from_box(np.array([0.0, 0.0, 200.0, 300.0]), (192, 256), padding=1.25)
    np.testing.assert_allclose(corner.to_image(np.zeros((1, 2))), [[-40.625, -37.5]], atol=TOL)
    assert warp_crops([frame + 1], [corner])[0, :, 0, 0].abs().max() == 0


class BrightestPixelPose:
    """A pose-model double: every COCO joint is put on the crop's brightest pixel, scores 0, 0.1, ..., 1.6."""

    input_size = (192, 256)
    padding = 1.0

    def __call__(self, crops):
        flat = crops[:, 0].reshape(len(crops), -1).argmax(dim=1)
        points = torch.stack([flat % crops.shape[-1], flat // crops.shape[-1]], dim=1).double().numpy()
        keypoints = np.repeat(points[:, None, :], 17, axis=1)
        return keypoints, np.tile(np.linspace(0, 1.6, 17), (len(crops), 1)), None


def test_crop_and_back_through_a_pose_double():
    # Box 384 x 512 px, padding 1: the crop is the box at half resolution, so crop (u, v) = frame (x / 2, y / 2).
    frame = torch.zeros(3, 600, 500, dtype=torch.uint8)
    frame[:, 300, 200] = 255
    results = estimate_keypoints([frame, frame], [np.array([0.0, 0.0, 384.0, 512.0, 0.9]), None],
                                 BrightestPixelPose(), batch=8)
    keypoints, scores = results[0]["keypoints"], results[0]["scores"]
    assert results[1] is None
    np.testing.assert_allclose(keypoints, np.tile([200.0, 300.0], (17, 1)), atol=TOL)
    np.testing.assert_allclose(scores, coco_to_h36m(np.linspace(0, 1.6, 17)[:, None])[:, 0])


def test_upsampled_at_equals_full_align_corners_upsample():
    generator = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 37, 66, generator=generator) * 20
    full = F.interpolate(depth[:, None], size=(1080, 1920), mode="bilinear", align_corners=True)[:, 0]
    ix = torch.randint(0, 1920, (2, 500), generator=generator)
    iy = torch.randint(0, 1080, (2, 500), generator=generator)
    expected = torch.stack([full[b, iy[b], ix[b]] for b in range(2)])
    torch.testing.assert_close(upsampled_at(depth, (1080, 1920), ix, iy), expected, atol=1e-4, rtol=1e-5)


def test_joint_depths_on_a_ramp():
    # Model-size ramp d(xs, ys) = 2 + 0.5 xs + 0.25 ys on 9 x 5; frame 81 x 41, so the upsampled map is
    # D(x, y) = 2 + 0.05 x + 0.025 y exactly (align_corners=True: xs = x * 8 / 80, ys = y * 4 / 40).
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(9.0), indexing="ij")
    depth = (2 + 0.5 * xs + 0.25 * ys)[None]
    ramp = lambda x, y: 2 + 0.05 * x + 0.025 * y
    keypoints = np.array([[[40.2, 20.4], [0.0, 0.0], [-5.0, 10.0], [80.6, 40.0]]])
    out = joint_depths(depth, (41, 81), keypoints, radius=2)
    np.testing.assert_allclose(out["depth_point"][0], [ramp(40, 20), ramp(0, 0), ramp(0, 10), ramp(80, 40)], atol=1e-5)
    # Disk of radius 2: min at (-2, 0), max at (+2, 0) (0.05 per px in x beats 0.025 in y); clipped at the borders.
    np.testing.assert_allclose(out["depth_min"][0], [ramp(38, 20), ramp(0, 0), ramp(0, 8), ramp(78, 40)], atol=1e-5)
    np.testing.assert_allclose(out["depth_max"][0], [ramp(42, 20), ramp(2, 0), ramp(2, 10), ramp(80, 40)], atol=1e-5)
    assert out["in_image"][0].tolist() == [True, True, False, False]
    assert out["depth_point"].dtype == np.float32


def test_features_at_reads_the_cell_under_a_point():
    # Maps of 8 x 16 cells over a 64 x 128 px image; channel 0/1 hold each cell centre's x/y in px, as a fraction
    # of the image size. Bilinear reading at a point returns the point's own (x / W, y / H).
    height, width, rows, cols = 64, 128, 8, 16
    ys, xs = torch.meshgrid((torch.arange(rows) + 0.5) * height / rows - 0.5,
                            (torch.arange(cols) + 0.5) * width / cols - 0.5, indexing="ij")
    maps = torch.stack([xs / width, ys / height])[None].repeat(2, 1, 1, 1)
    points = np.array([[[20.0, 10.0], [100.5, 50.25], [64.0, 32.0]], [[10.0, 5.0], [111.0, 55.0], [30.0, 40.0]]])
    vectors = features_at(maps, points, (height, width))
    assert vectors.shape == (2, 3, 2) and vectors.dtype == np.float16
    np.testing.assert_allclose(vectors, points / [width, height], rtol=1e-3)


def test_each_frame_samples_its_own_row_of_the_forward_it_shares():
    """Frames of two sizes in one batch, their depth rows spread over two forwards in another order than the
    frames': each frame's depth is sampled from its own row, as one frame alone through `joint_depths`."""
    from shardprep.stages.depth.pipeline import DepthForward, DepthRow, sample_depths

    generator = torch.Generator().manual_seed(0)
    wide = DepthForward((60, 90), torch.rand(2, 24, 36, generator=generator) * 10, None)
    tall = DepthForward((90, 60), torch.rand(3, 36, 24, generator=generator) * 10, None)
    # frame: forward, row (None: no person)
    rows = [DepthRow(tall, 2), None, DepthRow(wide, 1), DepthRow(tall, 0), DepthRow(wide, 0), DepthRow(tall, 1)]
    poses = [None if row is None else {"keypoints": np.random.default_rng(index).uniform(0, 59, (17, 2))}
             for index, row in enumerate(rows)]
    sampled = sample_depths(rows, poses, radius=2)
    assert sampled[1] is None
    for index, row in enumerate(rows):
        if row is None:
            continue
        alone = joint_depths(row.forward.depth[row.row:row.row + 1], row.forward.image_size,
                             poses[index]["keypoints"][None], 2)
        for key, value in alone.items():
            np.testing.assert_array_equal(sampled[index][key], value[0], err_msg=f"frame {index} {key}")
