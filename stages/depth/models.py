"""The three models behind the depth stage, loaded through their own APIs and run on batches.

RTMDet and RTMPose load with mmdet's `init_detector` / mmpose's `init_model` from config files (the configs ship
inside the wheels: `mmdet::rtmdet/...`, `mmpose::body_2d_keypoint/...`) and a checkpoint (the seeded random one of
random_models.py when the stage's is null: tests, demo, benchmarks). Depth Anything V2 loads with transformers'
`from_pretrained`, offline.

Each wrapper runs the model's own forward and decoding; only the resampling of its test pipeline is done on the
device (imageops.py) so frames are uploaded once. The networks run under bf16/fp16 autocast on CUDA when asked; box
decoding, NMS and SimCC decoding run in float32 outside it, as they would in the model's own predict.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_map

from shardprep.runtime.errors import ConfigError
from shardprep.stages.depth.cuda_graphs import GraphCache
from shardprep.stages.depth.geometry import depth_input_size
from shardprep.stages.depth.imageops import letterbox, resize_bicubic
from shardprep.stages.depth.person_boxes import PersonBoxes, PersonDecoding
from shardprep.stages.depth.sampling import features_at

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
# Depth Anything V2's NormalizeImage (ImageNet statistics), on RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; plain float32 on the CPU and for precision=fp32."""
    dtype = DTYPES[precision]
    if device.type != "cuda" or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


class BatchForward:
    """A network's forward on batches of at most `batch_size`, optionally through torch.compile and CUDA graphs.

    Compiled graphs are specialised to the input shape: a shorter batch is padded (its last sample repeated) so one
    graph serves every batch, and the outputs are cut back. A node without a working compiler toolchain (Triton
    needs one) runs the network eager from then on, slower but not failing. With `cuda_graphs`, the compiled
    forward is replayed from a CUDA graph (cuda_graphs.py).
    """

    def __init__(self, forward: Callable[[torch.Tensor], Any], batch_size: int, compile: bool, name: str,
                 setting: str, cuda_graphs: bool = False) -> None:
        self.forward, self.batch_size, self.name, self.setting = forward, batch_size, name, setting
        self.compiled = torch.compile(forward, dynamic=False) if compile else None
        self.replays = GraphCache(self.compiled, name) if cuda_graphs and compile else None

    def __call__(self, batch: torch.Tensor) -> Any:
        if self.compiled is None:
            return self.forward(batch)
        count = len(batch)
        padded = torch.cat([batch, batch[-1:].expand(self.batch_size - count, *batch.shape[1:])]) \
            if count < self.batch_size else batch
        try:
            out = self.replays(padded) if self.replays is not None else self.compiled(padded)
        except torch._dynamo.exc.TorchDynamoException as error:
            log.warning("torch.compile of the %s failed (%s); running it eager from now on (%s=false skips the "
                        "attempt)", self.name, str(error).splitlines()[0], self.setting)
            self.compiled = self.replays = None
            return self.forward(batch)
        return tree_map(lambda value: value[:count] if isinstance(value, torch.Tensor) else value, out)


def compile_setting(setting: Any, device: torch.device) -> bool:
    """stage.<model>.compile: auto (on CUDA only: on the CPU compiling costs more than it saves), true or false."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def cuda_graphs_setting(setting: Any, device: torch.device) -> bool:
    """stage.cuda_graphs: auto or true (the compiled networks and the person decoding replayed as CUDA graphs, on
    CUDA), or false."""
    return device.type == "cuda" and setting in ("auto", True)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA, where cuDNN's NHWC convolutions are the fast ones at bf16; the default on the CPU."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _normalizer(preprocessor: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """mean, std (1, 3, 1, 1) and whether the model wants RGB, from an mmengine ImgDataPreprocessor.

    OpenMMLab loads images as BGR; `bgr_to_rgb=True` (its `_channel_conversion`) means the network sees RGB.
    """
    mean = preprocessor.mean.reshape(1, -1, 1, 1).to(device).float()
    std = preprocessor.std.reshape(1, -1, 1, 1).to(device).float()
    return mean, std, bool(getattr(preprocessor, "_channel_conversion", False))


def _pipeline_step(cfg: Any, name: str) -> dict[str, Any]:
    pipeline = cfg.get("test_pipeline") or cfg.test_dataloader.dataset.pipeline
    for step in pipeline:
        if step["type"] == name:
            return step
    raise ConfigError(f"model config has no {name} step in its test pipeline; it is not a model this stage supports")


class Detector:
    """RTMDet (an mmdet single-stage detector with point priors and a keep-ratio Resize + Pad test pipeline): person
    boxes for batches of frames. The network is mmdet's; its person-class decoding runs batched (person_boxes.py)."""

    def __init__(self, config: Path, checkpoint: str | None, device: torch.device, precision: str,
                 person_label: int = 0, test_cfg: dict[str, Any] | None = None, batch_size: int = 16,
                 compile: bool = False, cuda_graphs: bool = False) -> None:
        from mmdet.apis import init_detector

        # init_detector clears the backbone's pretrained init_cfg only when given no options; never fetch it.
        options = {"model.backbone.init_cfg": None}
        options.update({f"model.test_cfg.{key}": value for key, value in (test_cfg or {}).items()})
        self.model = init_detector(str(config), checkpoint, device=str(device), cfg_options=options)
        self.device, self.precision = device, precision
        self.decoding = PersonDecoding.of(self.model.bbox_head, self.model.bbox_head.test_cfg, person_label)
        resize = _pipeline_step(self.model.cfg, "Resize")
        if not resize.get("keep_ratio", False) or len(set(resize["scale"])) != 1:
            raise ConfigError(f"{config}: expected a square keep-ratio Resize in the test pipeline, got {resize}")
        self.size = int(resize["scale"][0])
        pad_value = _pipeline_step(self.model.cfg, "Pad").get("pad_val", {}).get("img", 0)
        self.pad_value = float(np.mean(pad_value))
        self.mean, self.std, self.rgb = _normalizer(self.model.data_preprocessor, device)
        self.memory_format = memory_format(device)
        self.model.to(memory_format=self.memory_format)
        self.network = BatchForward(self._network, batch_size, compile, "detector", "stage.detector.compile",
                                    cuda_graphs)
        self.person_boxes = PersonBoxes(self.model.bbox_head, self.decoding, cuda_graphs)

    def _network(self, batch: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with autocast(self.device, self.precision):
            return self.model.bbox_head(self.model.extract_feat(batch))

    @torch.no_grad()
    def __call__(self, frames: list[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame (3, H, W) uint8 RGB: person boxes (n, 4) xyxy frame px and scores (n,), best first."""
        batch, boxes = letterbox(frames, self.size, self.pad_value)
        if not self.rgb:
            batch = batch.flip(1)
        batch = ((batch - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        cls_scores, bbox_preds = self.network(batch)
        found = self.person_boxes(cls_scores, bbox_preds, [box.resized for box in boxes])
        return [(box.boxes_to_image(xyxy), scores) for box, (xyxy, scores) in zip(boxes, found)]


class PoseEstimator:
    """RTMPose (an mmpose top-down model) on batches of crops; keypoints come back in crop pixels (COCO order)."""

    def __init__(self, config: Path, checkpoint: str | None, device: torch.device, precision: str,
                 features: bool = False, batch_size: int = 64, compile: bool = False,
                 cuda_graphs: bool = False) -> None:
        from mmpose.apis import init_model

        self.model = init_model(str(config), checkpoint, device=str(device))
        self.device, self.precision = device, precision
        affine = _pipeline_step(self.model.cfg, "TopdownAffine")
        if affine.get("use_udp", False):
            raise ConfigError(f"{config}: UDP top-down affine is not supported (RTMPose configs do not use it)")
        self.input_size = tuple(int(v) for v in affine["input_size"])  # (W, H)
        self.padding = float(_pipeline_step(self.model.cfg, "GetBBoxCenterScale").get("padding", 1.25))
        self.flip_test = bool(self.model.test_cfg.get("flip_test", False))
        # On the device once: indexing with the list would upload it every call from pageable memory, a copy the
        # host waits for behind all the work queued on the stream.
        self.flip_indices = torch.tensor(self.model.dataset_meta["flip_indices"], device=device)
        self.mean, self.std, self.rgb = _normalizer(self.model.data_preprocessor, device)
        self.features = features
        self.feature_channels = int(self.model.head.in_channels)
        self.split_ratio = simcc_split_ratio(self.model.head.decoder)
        self.memory_format = memory_format(device)
        self.model.to(memory_format=self.memory_format)
        self.network = BatchForward(self._network, batch_size, compile, "pose model", "stage.pose.compile",
                                    cuda_graphs)

    def _network(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The last backbone map and the SimCC vectors (x, y) of a batch of normalised crops."""
        with autocast(self.device, self.precision):
            feats = self.model.extract_feat(batch)
            pred_x, pred_y = self.model.head.forward(feats)
        return feats[-1], pred_x, pred_y

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """crops (n, 3, H_in, W_in) float RGB 0-255 -> keypoints (n, K, 2) crop px, scores (n, K), and with
        `features` the last backbone map's vectors at the keypoints (n, K, C) float16 (else None)."""
        from mmpose.models.utils.tta import flip_vectors

        batch = crops if self.rgb else crops.flip(1)
        batch = ((batch - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        last_map, pred_x, pred_y = self.network(batch)
        pred_x, pred_y = pred_x.float(), pred_y.float()
        if self.flip_test:
            _, flip_x, flip_y = self.network(batch.flip(-1).contiguous(memory_format=self.memory_format))
            flip_x, flip_y = flip_vectors(flip_x.float(), flip_y.float(), flip_indices=self.flip_indices)
            pred_x, pred_y = (pred_x + flip_x) / 2, (pred_y + flip_y) / 2
        if self.split_ratio is None:
            decoded = self.model.head.decode((pred_x, pred_y))
            keypoints = np.stack([d.keypoints[0] for d in decoded]).astype(np.float64)
            scores = np.stack([d.keypoint_scores[0] for d in decoded]).astype(np.float64)
        else:
            located, values = simcc_maxima(pred_x, pred_y, self.split_ratio)
            keypoints, scores = located.cpu().numpy().astype(np.float64), values.cpu().numpy().astype(np.float64)
        width, height = self.input_size
        vectors = features_at(last_map, keypoints, (height, width)) if self.features else None
        return keypoints, scores, vectors


def simcc_split_ratio(codec: Any) -> float | None:
    """The split ratio of a plain SimCC codec (arg-max decoding, which `simcc_maxima` does on the device); None for
    codecs that refine or add visibility (DARK, decode_visibility): those decode through mmpose's own code."""
    if type(codec).__name__ != "SimCCLabel" or codec.use_dark or codec.decode_visibility:
        return None
    return float(codec.simcc_split_ratio)


def simcc_maxima(pred_x: torch.Tensor, pred_y: torch.Tensor, split_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mmpose's SimCCLabel.decode (get_simcc_maximum) for a batch, on the device: per keypoint the first arg-max of
    each axis' vector over `split_ratio` (-1 / split_ratio where the score is not positive), and the score, the
    smaller of the two maxima. pred_x (n, K, Wx), pred_y (n, K, Wy) float32 -> (n, K, 2) float32, (n, K)."""
    located = torch.stack([pred_x.argmax(dim=-1), pred_y.argmax(dim=-1)], dim=-1).float()
    scores = torch.minimum(pred_x.amax(dim=-1), pred_y.amax(dim=-1))
    located = torch.where((scores <= 0)[..., None], torch.full_like(located, -1.0), located)
    return located / split_ratio, scores


class DepthEstimator:
    """Depth Anything V2 metric (transformers) on batches of same-size frames, at its native input resolution."""

    def __init__(self, path: Path, device: torch.device, precision: str, features: bool = False,
                 batch_size: int = 16, compile: bool = False, cuda_graphs: bool = False) -> None:
        from transformers import DepthAnythingForDepthEstimation

        self.model = DepthAnythingForDepthEstimation.from_pretrained(str(path), local_files_only=True)
        if self.model.config.depth_estimation_type != "metric":
            raise ConfigError(f"{path} is a relative-depth model (depth_estimation_type="
                              f"{self.model.config.depth_estimation_type!r}); this stage needs a metric one")
        self.model.eval().to(device)
        self.device, self.precision = device, precision
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).reshape(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).reshape(1, 3, 1, 1) * 255
        self.feature_channels = int(self.model.config.fusion_hidden_size)
        self._decoder_maps: list[torch.Tensor] = []
        if features:
            # The depth decoder's last fused map (what the head reads), captured on this instance only.
            self.model.head.register_forward_pre_hook(
                lambda module, args: self._decoder_maps.append(args[0][module.head_in_index]))
        self.batch_size = batch_size
        # torch.compile (inductor) fuses the ViT's norms, activations and casts (docs/depth.md); one graph per input
        # size, compiled on the first batch of that size.
        self.network = BatchForward(self._network, batch_size, compile, "depth model", "stage.depth.compile",
                                    cuda_graphs)

    def _network(self, pixels: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.model(pixel_values=pixels).predicted_depth

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 3, H, W) uint8 RGB frames of one size -> (B, h, w) float32 metres at the model's input size, and
        with `features` the decoder's last fused map (B, C, h', w'), which covers the whole frame (else None)."""
        size = depth_input_size(tuple(frames.shape[2:]))
        pixels = (resize_bicubic(frames, size) - self.mean) / self.std
        count = len(frames)
        self._decoder_maps.clear()
        depth = self.network(pixels)
        maps = self._decoder_maps.pop()[:count] if self._decoder_maps else None  # the last forward's (a fallback's)
        return depth.float().reshape(count, *depth.shape[-2:]), maps
