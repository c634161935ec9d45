"""Frames onto the model device: JPEG bytes as the stage decodes them on a GPU (here torchvision's CPU decoder takes
nvJPEG's place), decoded arrays, and the files neither path can decode; and SimCC decoding on the device against
mmpose's own codec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shardprep.datasets.base import Item
from shardprep.datasets.mmpose_npz import MMPoseDataset, read_jpeg
from shardprep.runtime.npz import write_npz
from shardprep.stages.depth.decode import frames_on_device
from shardprep.stages.depth.models import simcc_maxima


def frames_dataset(tmp_path: Path, files: dict[str, bytes | Image.Image]) -> tuple[MMPoseDataset, list[Item]]:
    images = tmp_path / "images"
    images.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (images / name).write_bytes(content)
        else:
            content.save(images / name, quality=90)
    count = len(files)
    write_npz(tmp_path / "annotation.npz", {
        "imgname": np.array(list(files)), "center": np.full((count, 2), 20.0), "scale": np.full(count, 0.1),
        "part": np.zeros((count, 17, 3)), "S": np.zeros((count, 17, 4)),
    })
    dataset = MMPoseDataset("frames", str(tmp_path / "annotation.npz"), str(images))
    return dataset, dataset.items()


def photo(width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def test_jpeg_bytes_decode_to_the_pixels_the_cpu_read_gives(tmp_path: Path) -> None:
    dataset, items = frames_dataset(tmp_path, {"a.jpg": photo(64, 48), "b.jpg": photo(40, 30, "L"),
                                               "c.png": photo(33, 21)})
    encoded = [dataset.read_encoded(item) for item in items]
    assert [("encoded" in payload) for payload in encoded] == [True, True, False]  # a PNG is read decoded
    assert encoded[0]["image_size"] == (48, 64) and encoded[1]["image_size"] == (30, 40)
    frames = frames_on_device(encoded, torch.device("cpu"))
    for item, frame, payload in zip(items, frames, encoded):
        expected = dataset.read(item)
        assert torch.equal(frame, torch.from_numpy(expected["image"]).permute(2, 0, 1))
        np.testing.assert_array_equal(payload["bbox_gt"], expected["bbox_gt"])


def test_a_file_no_decoder_reads_fails_alone_naming_it(tmp_path: Path) -> None:
    good = photo(32, 32)
    whole = Path(tmp_path / "whole.jpg")
    photo(256, 256).save(whole, quality=90)
    data = whole.read_bytes()
    cut = data[:len(data) // 2]  # the header survives, half the scan data does not
    dataset, items = frames_dataset(tmp_path / "set", {"good.jpg": good, "cut.jpg": cut})
    frames = frames_on_device([dataset.read_encoded(item) for item in items], torch.device("cpu"))
    assert isinstance(frames[0], torch.Tensor) and frames[0].shape == (3, 32, 32)
    assert isinstance(frames[1], ValueError) and "cut.jpg" in str(frames[1])
    assert read_jpeg(tmp_path / "set" / "images" / "good.jpg") is not None
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_jpeg(tmp_path / "missing.jpg")


def test_payloads_without_an_rgb_image_fail_alone() -> None:
    frames = frames_on_device([{"image": np.zeros((4, 4), np.uint8)}, {"image": np.zeros((1, 5, 3), np.uint8)},
                               {"image": np.zeros((3, 5, 3), np.uint8)}], torch.device("cpu"))
    assert "no (H, W, 3) uint8 RGB" in str(frames[0]) and "too small" in str(frames[1])
    assert frames[2].shape == (3, 3, 5)


def test_simcc_maxima_equal_mmposes_codec() -> None:
    from mmpose.codecs import SimCCLabel

    codec = SimCCLabel(input_size=(192, 256), sigma=(4.9, 5.66), simcc_split_ratio=2.0, normalize=False)
    rng = np.random.default_rng(3)
    pred_x = rng.normal(size=(5, 17, 384)).astype(np.float32)
    pred_y = rng.normal(size=(5, 17, 512)).astype(np.float32)
    pred_x[0, 0] = -1.0  # no positive response: mmpose puts the keypoint at -1 / split ratio
    pred_y[1, 2, 7] = pred_y[1, 2, 9] = 50.0  # a tie: the first arg-max wins
    expected = [codec.decode(x, y) for x, y in zip(pred_x, pred_y)]
    keypoints, scores = simcc_maxima(torch.from_numpy(pred_x), torch.from_numpy(pred_y), 2.0)
    np.testing.assert_array_equal(keypoints.numpy(), np.concatenate([k for k, _ in expected]))
    np.testing.assert_array_equal(scores.numpy(), np.concatenate([s for _, s in expected]))
    assert keypoints[0, 0].tolist() == [-0.5, -0.5] and keypoints[1, 2, 1] == 3.5


def test_jpeg_bytes_the_gpu_refuses_decode_on_the_cpu_like_pillow(tmp_path: Path):
    """decode_rgb (the CPU fallback for bytes nvJPEG refuses) gives Pillow's own RGB pixels of the file, from its
    bytes as from its path, and a torn file's bytes a ValueError that names it."""
    import io

    from shardprep.datasets.mmpose_npz import decode_rgb

    path = tmp_path / "frame.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    with Image.open(path) as image:
        pillow = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(decode_rgb(io.BytesIO(data), path), pillow)
    np.testing.assert_array_equal(decode_rgb(path, path), pillow)
    with pytest.raises(ValueError, match="cannot decode image torn.jpg"):
        decode_rgb(io.BytesIO(data[:20]), "torn.jpg")
