"""The depth stage: per frame, one person's H36M-17 keypoints with their metric depth (point, disk min and max).

Per batch of frames: (1) a person box, from RTMDet run on the batch or from the annotation (`detector.kind=gt`),
chosen by selection.py's rule; (2) RTMPose on the batch of crops, COCO -> H36M; (3) Depth Anything V2 metric on the
frames, one forward per resolution; (4) per-joint depth sampled from it. A frame with no box is a recorded frame
(`detected=False`, zeros), not an error; a payload that is not an RGB image fails alone.
Decoding and (1) are the two `preparation` steps, which the runtime runs two and one batches ahead in threads of
their own, on the models' decode and prepare streams; (2)-(4) are `process`, on their process stream: on a GPU
three batches' work overlaps (the JPEG engines decoding one, the detector on the next, pose and depth on the third).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shardprep.datasets.base import Dataset, Item
from shardprep.runtime.errors import ConfigError
from shardprep.stages.base import ArrayOutput, ItemResult, Stage, Work
from shardprep.stages.depth.files import check_stack, resolve_config, resolve_depth_model
from shardprep.stages.depth.keypoints import JOINTS

SCHEMA = {
    "keypoints": (JOINTS, 2), "scores": (JOINTS,), "depth_point": (JOINTS,), "depth_min": (JOINTS,),
    "depth_max": (JOINTS,), "in_image": (JOINTS,), "bbox": (5,), "image_size": (2,), "detected": (),
    "depth_radius": (),
}
# Optional ("V2"): per-joint vectors of the pose backbone's last map and the depth decoder's last fused map.
FEATURES = {"pose_features": (JOINTS, None), "depth_features": (JOINTS, None)}
DETECTORS = ("rtmdet", "gt")
PRECISIONS = ("bf16", "fp16", "fp32")
DECODERS = ("auto", "cpu", "gpu")  # where JPEG frames are decoded: decode.py
SWITCHES = ("auto", True, False)


@dataclass
class DecodedFrame:
    """A work item's payload after `decode_frames`: its frame on the device (or why it has none) and its annotated
    box, if any."""

    frame: Any  # torch.Tensor (3, H, W) uint8, or the ValueError that fails the item
    bbox_gt: np.ndarray | None
    use_gt_box: bool


@dataclass
class DetectedFrame:
    """A work item's payload after `find_people`: its frame on the device (or why it has none) and its chosen
    box."""

    frame: Any  # torch.Tensor (3, H, W) uint8, or the ValueError that fails the item
    box: np.ndarray | None


class DepthStage(Stage):
    # Batched convolutions and matmuls give bits that depend on the batch (its size picks the kernels, its other
    # frames nothing, but a shorter batch is another shape): fixed batches make the bytes independent of the plan.
    fixed_batches = True

    def __init__(self, name: str, detector: dict[str, Any], pose: dict[str, Any], depth: dict[str, Any],
                 batch_size: int = 16, read_workers: int = 4, device: str = "auto", precision: str = "bf16",
                 radius: int = 3, features: bool = False, deterministic: bool = True, decode: str = "auto",
                 cuda_graphs: Any = "auto") -> None:
        super().__init__(name, batch_size, read_workers)
        self.detector_cfg, self.pose_cfg, self.depth_cfg = detector, pose, depth
        self.device_name, self.precision, self.radius, self.features = device, precision, radius, features
        self.deterministic, self.decode, self.cuda_graphs = deterministic, decode, cuda_graphs
        self.outputs = (ArrayOutput("depth", {**SCHEMA, **(FEATURES if features else {})}),)
        self.models: Any = None

    # -- before submission -------------------------------------------------------------------------------------
    def validate(self) -> None:
        check_stack()
        if self.detector_cfg.get("kind") not in DETECTORS:
            raise ConfigError(f"stage.detector.kind={self.detector_cfg.get('kind')!r}: must be one of {DETECTORS}")
        if self.decode not in DECODERS:
            raise ConfigError(f"stage.decode={self.decode!r}: must be one of {DECODERS}")
        if self.decode == "gpu" and self.device_name == "cpu":
            raise ConfigError("stage.decode=gpu decodes on the models' GPU, but stage.device=cpu: use "
                              "stage.decode=auto")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"stage.precision={self.precision!r}: must be one of {PRECISIONS}")
        for key, part in (("detector", self.detector_cfg), ("pose", self.pose_cfg), ("depth", self.depth_cfg)):
            if part.get("compile", "auto") not in SWITCHES:
                raise ConfigError(f"stage.{key}.compile={part.get('compile')!r}: must be auto, true or false")
        if self.cuda_graphs not in SWITCHES:
            raise ConfigError(f"stage.cuda_graphs={self.cuda_graphs!r}: must be auto, true or false")
        if not isinstance(self.radius, int) or self.radius < 0:
            raise ConfigError(f"stage.radius={self.radius!r}: must be a whole number of pixels >= 0")
        for path in self.fingerprint_files():
            if not path.is_file():
                raise ConfigError(f"model file not found: {path} (check stage.detector / stage.pose / stage.depth)")
        if self.detector_cfg["kind"] == "rtmdet":
            from shardprep.stages.depth.person_boxes import check_detector_config

            check_detector_config(resolve_config(self.detector_cfg["config"]))

    def fingerprint_files(self) -> list[Path]:
        from shardprep.stages.depth.random_models import model_checkpoint

        files = []
        parts = {"pose": self.pose_cfg} if self.detector_cfg["kind"] == "gt" else {
            "detector": self.detector_cfg, "pose": self.pose_cfg}
        for role, part in parts.items():
            files.append(resolve_config(part["config"]))
            # A null checkpoint is the seeded random one of its config, built here once (the launcher checks files
            # before submitting) and then only read by every task.
            if part.get("checkpoint") or resolve_config(part["config"]).is_file():
                files.append(model_checkpoint(role, part))
        model_dir = resolve_depth_model(self.depth_cfg["model"])
        files += sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
        return files

    # -- in the task -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        from shardprep.stages.depth.pipeline import Models

        self.models = Models.load(self.detector_cfg, self.pose_cfg, self.depth_cfg, self.device_name, self.precision,
                                  self.features, self.deterministic, self.batch_size, self.cuda_graphs)

    def environment(self) -> dict[str, str]:
        from shardprep.stages.depth.environment import environment

        return environment(self.models.device) | {"decoder": "nvjpeg" if self._decodes_on_device() else "cpu"}

    def reader(self, dataset: Dataset) -> Callable[[Item], Any]:
        return dataset.read_encoded if self._decodes_on_device() else dataset.read

    def _decodes_on_device(self) -> bool:
        from shardprep.stages.depth.decode import decodes_on_device

        return decodes_on_device(self.decode, self.models.device)

    def preparation(self) -> tuple[Callable[[Sequence[Work]], list[Work]], ...]:
        return (self.decode_frames, self.find_people)

    def decode_frames(self, batch: Sequence[Work]) -> list[Work]:
        """Frames onto the device (nvJPEG: the GPU's JPEG engines), on the models' decode stream: the detector
        meanwhile runs on the batch before."""
        from shardprep.stages.depth.decode import frames_on_device

        with self.models.on_decode_stream():
            frames = frames_on_device([work.payload for work in batch], self.models.device)
        return [Work(work.item, DecodedFrame(frame, None, False) if isinstance(frame, ValueError) else DecodedFrame(
            frame, work.payload.get("bbox_gt"), bool(work.payload.get("use_gt_box", False))), work.todo)
            for work, frame in zip(batch, frames)]

    def find_people(self, batch: Sequence[Work]) -> list[Work]:
        """Each decoded frame's person box, chosen on the models' prepare stream."""
        from shardprep.stages.depth.pipeline import choose_boxes

        decoded: list[DecodedFrame] = [work.payload for work in batch]
        usable = [index for index, frame in enumerate(decoded) if not isinstance(frame.frame, ValueError)]
        boxes: dict[int, np.ndarray | None] = {}
        if usable:
            with self.models.on_prepare_stream():
                frames = [decoded[index].frame for index in usable]
                self.models.adopt(frames)
                boxes = dict(zip(usable, choose_boxes(
                    self.models, frames, [decoded[index].bbox_gt for index in usable],
                    [decoded[index].use_gt_box for index in usable])))
        return [Work(work.item, DetectedFrame(frame.frame, boxes.get(index)), work.todo)
                for index, (work, frame) in enumerate(zip(batch, decoded))]

    def process(self, batch: Sequence[Work]) -> list[ItemResult | BaseException]:
        """Keypoints and depths of `prepare`d frames."""
        from shardprep.stages.depth.pipeline import pose_and_depth

        results: list[ItemResult | BaseException | None] = [None] * len(batch)
        frames, boxes, indices = [], [], []
        for index, work in enumerate(batch):
            detected: DetectedFrame = work.payload
            if isinstance(detected.frame, ValueError):
                results[index] = ValueError(f"item {work.item.id}: {detected.frame}")
                continue
            frames.append(detected.frame)
            boxes.append(detected.box)
            indices.append(index)
        if frames:
            with self.models.on_process_stream():
                self.models.adopt(frames)
                for index, arrays in zip(indices, pose_and_depth(self.models, frames, boxes, self.radius)):
                    results[index] = {"depth": arrays}
        return results
