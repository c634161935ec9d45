"""Frames onto the model device: JPEG bytes decoded there (nvJPEG, through torchvision), decoded arrays uploaded.

On a GPU the read-ahead threads then only read files: decoding 1000x1000 JPEGs on the CPU tops out at a few hundred
frames/s however many threads decode (docs/depth.md), below what the models run at. A frame nvJPEG cannot decode
(a corrupt file, a rare JPEG variant) is decoded on the CPU, and fails alone if that fails too.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

def decodes_on_device(setting: str, device: torch.device) -> bool:
    """stage.decode: auto (on the GPU when the models run on CUDA), gpu or cpu."""
    return device.type == "cuda" and setting in ("auto", "gpu")


def frames_on_device(payloads: Sequence[Any], device: torch.device) -> list[torch.Tensor | ValueError]:
    """Per payload a (3, H, W) uint8 RGB tensor on `device`, or the error that makes the item fail: `encoded` JPEG
    bytes are decoded on the device in one call, an `image` array (H, W, 3) is checked and uploaded."""
    out: list[torch.Tensor | ValueError | None] = [None] * len(payloads)
    encoded = []
    for index, payload in enumerate(payloads):
        if isinstance(payload, dict) and "encoded" in payload:
            encoded.append(index)
            continue
        try:
            image = checked_image(payload)
        except ValueError as error:
            out[index] = error
            continue
        out[index] = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)
    if encoded:
        for index, frame in zip(encoded, _decode([payloads[i] for i in encoded], device)):
            out[index] = frame
    return [_large_enough(frame) for frame in out]


def _large_enough(frame: torch.Tensor | ValueError) -> torch.Tensor | ValueError:
    if isinstance(frame, torch.Tensor) and min(frame.shape[1:]) < 2:
        return ValueError(f"image of size {frame.shape[2]}x{frame.shape[1]} px is too small to process")
    return frame


def _decode(payloads: Sequence[dict[str, Any]], device: torch.device) -> list[torch.Tensor | ValueError]:
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.from_numpy(np.asarray(payload["encoded"]).copy()) for payload in payloads]
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad file fails the whole call: decode them one by one to find it
        return [_decode_one(payload, bytes_, device) for payload, bytes_ in zip(payloads, data)]


def _decode_one(payload: dict[str, Any], data: torch.Tensor, device: torch.device) -> torch.Tensor | ValueError:
    from torchvision.io import ImageReadMode, decode_jpeg

    from shardprep.datasets.mmpose_npz import decode_rgb

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    try:
        rgb = decode_rgb(io.BytesIO(payload["encoded"].tobytes()), payload.get("image_file", "?"))
    except ValueError as error:
        return error
    return torch.from_numpy(rgb).to(device).permute(2, 0, 1)


def checked_image(payload: Any) -> np.ndarray:
    image = payload.get("image") if isinstance(payload, dict) else None
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("payload has no (H, W, 3) uint8 RGB 'image' (the dataset's read() must provide one)")
    return image
