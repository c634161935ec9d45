"""The depth stage: per frame, one person's H36M-17 keypoints with their metric depth (point, disk min and max).

Per batch of frames: (1) a person box, from RTMDet run on the batch or from the annotation (`detector.kind=gt`),
chosen by selection.py's rule; (2) RTMPose on the batch of crops, COCO -> H36M; (3) Depth Anything V2 metric on the
frames, one forward per resolution; (4) per-joint depth sampled from it. A frame with no box is a recorded frame
(`detected=False`, zeros), not an error; a payload that is not an RGB image fails alone.
Decoding, (1) and (3) are the `preparation` steps, which the runtime runs three, two and one batches ahead of
`process` ((2) and (4)) in threads of their own; each step queues its device work on a CUDA stream of its own
(`Models.on`), so on a GPU four batches' work overlaps: the JPEG engines decode one while the detector, Depth
Anything and the pose model run on the three before it, and each step's host work hides behind the others' kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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
    """A work item's payload after `find_people`: its frame on the device (or why it has none) and its chosen box;
    after `estimate_depth` also its depth (None without a box)."""

    frame: Any  # torch.Tensor (3, H, W) uint8, or the ValueError that fails the item
    box: np.ndarray | None
    depth: Any = None  # pipeline.DepthRow


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
        return (self.decode_frames, self.find_people, self.estimate_depth)

    def decode_frames(self, batch: Sequence[Work]) -> list[Work]:
        """Frames onto the device (nvJPEG: the GPU's JPEG engines), on the models' decode stream."""
        from shardprep.stages.depth.decode import frames_on_device

        with self.models.on("decode"):
            frames = frames_on_device([work.payload for work in batch], self.models.device)
        return [Work(work.item, DecodedFrame(frame, None, False) if isinstance(frame, ValueError) else DecodedFrame(
            frame, work.payload.get("bbox_gt"), bool(work.payload.get("use_gt_box", False))), work.todo)
            for work, frame in zip(batch, frames)]

    def find_people(self, batch: Sequence[Work]) -> list[Work]:
        """Each decoded frame's person box, chosen on the models' detect stream."""
        from shardprep.stages.depth.pipeline import choose_boxes

        decoded: list[DecodedFrame] = [work.payload for work in batch]
        usable = _with_frames(decoded)
        boxes: dict[int, np.ndarray | None] = {}
        if usable:
            with self.models.on("detect"):
                frames = [decoded[index].frame for index in usable]
                self.models.adopt(frames)
                boxes = dict(zip(usable, choose_boxes(
                    self.models, frames, [decoded[index].bbox_gt for index in usable],
                    [decoded[index].use_gt_box for index in usable])))
        return [Work(work.item, DetectedFrame(frame.frame, boxes.get(index)), work.todo)
                for index, (work, frame) in enumerate(zip(batch, decoded))]

    def estimate_depth(self, batch: Sequence[Work]) -> list[Work]:
        """Depth Anything on the frames with a person box, on the models' depth stream."""
        from shardprep.stages.depth.pipeline import depth_forwards

        detected: list[DetectedFrame] = [work.payload for work in batch]
        usable = _with_frames(detected)
        depths = {}
        if usable:
            with self.models.on("depth"):
                frames = [detected[index].frame for index in usable]
                self.models.adopt(frames)
                depths = dict(zip(usable, depth_forwards(self.models, frames, [detected[i].box for i in usable])))
        return [Work(work.item, replace(frame, depth=depths.get(index)), work.todo)
                for index, (work, frame) in enumerate(zip(batch, detected))]

    def process(self, batch: Sequence[Work]) -> list[ItemResult | BaseException]:
        """Keypoints of `prepare`d frames, and the depth at them."""
        from shardprep.stages.depth.pipeline import keypoint_arrays

        results: list[ItemResult | BaseException | None] = [None] * len(batch)
        usable: list[tuple[int, DetectedFrame]] = []
        for index, work in enumerate(batch):
            detected: DetectedFrame = work.payload
            if isinstance(detected.frame, ValueError):
                results[index] = ValueError(f"item {work.item.id}: {detected.frame}")
            else:
                usable.append((index, detected))
        if usable:
            frames = [detected.frame for _, detected in usable]
            depths = [detected.depth for _, detected in usable]
            with self.models.on("process"):
                self.models.adopt(frames + [tensor for depth in depths if depth is not None
                                            for tensor in depth.forward.tensors()])
                arrays = keypoint_arrays(self.models, frames, [detected.box for _, detected in usable], depths,
                                         self.radius)
            for (index, _), frame_arrays in zip(usable, arrays):
                results[index] = {"depth": frame_arrays}
        return results


def _with_frames(payloads: Sequence[DecodedFrame | DetectedFrame]) -> list[int]:
    """Indices of the payloads that hold a frame (not the error that fails their item)."""
    return [index for index, payload in enumerate(payloads) if not isinstance(payload.frame, ValueError)]
