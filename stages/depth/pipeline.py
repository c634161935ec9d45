"""One batch of frames through detector, pose and depth models, to the per-frame arrays of the stage's schema.

Frames are uploaded to the device once, as uint8; every resampling happens there. Detection runs on the whole
batch, pose on the batch of chosen boxes' crops, depth on the frames that have a person, one forward per resolution.
Decoding, detection (`choose_boxes`), depth (`depth_forwards`) and the rest (`keypoint_arrays`) can run as
separate steps, each on a CUDA stream of its own (`Models.on`): the stage runs them on successive batches at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from shardprep.stages.depth.files import resolve_config, resolve_depth_model
from shardprep.stages.depth.geometry import TopdownCrop
from shardprep.stages.depth.imageops import same_size, warp_crops
from shardprep.stages.depth.keypoints import JOINTS, coco_to_h36m
from shardprep.stages.depth.models import (DepthEstimator, Detector, PoseEstimator, chunks, compile_setting,
                                           cuda_graphs_setting)
from shardprep.stages.depth.random_models import model_checkpoint
from shardprep.stages.depth.sampling import features_at, joint_depths
from shardprep.stages.depth.selection import select_person

log = logging.getLogger(__name__)

STEPS = ("decode", "detect", "depth", "process")


class CropModel(Protocol):
    """What `estimate_keypoints` needs from a pose model (PoseEstimator, or a double in the geometry tests)."""

    input_size: tuple[int, int]
    padding: float

    def __call__(self, crops: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]: ...


@dataclass
class Models:
    device: torch.device
    detector: Detector | None
    pose: PoseEstimator
    depth: DepthEstimator
    score_threshold: float
    pose_batch: int
    # Per step (decode, detect, depth, process) its CUDA stream; none on the CPU.
    streams: dict[str, torch.cuda.Stream] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # No step runs on the legacy default stream: work a library queues on a blocking stream of its own
        # (cudaStreamCreate, as torchvision's stable-ABI nvJPEG decoder does) waits for everything queued there, so
        # pose and depth of batch N there would hold batch N+1's decoding back. torchvision 0.26's decoder does not
        # wait (the benchmark's nvJPEG probe); with streams of our own it does not matter which one is installed.
        if self.device.type == "cuda":
            for step in STEPS:
                self.streams.setdefault(step, torch.cuda.Stream(self.device))

    def on(self, step: str) -> AbstractContextManager[None]:
        """Device work queued in the block goes to `step`'s stream. A decode, detect or depth block is finished
        when it ends: the next step, in another thread, takes its tensors (and must `adopt` them). A process
        block's results reach the host through device-to-host copies, which wait for it."""
        return _on(self.streams.get(step), finish=step != "process")

    def adopt(self, tensors: Sequence[torch.Tensor]) -> None:
        """Tensors made on another of our streams, now used on the current one: their memory is not handed out
        again until the current stream's queued work on them is done (the caching allocator only knows the stream
        that allocated a block)."""
        if self.device.type == "cuda":
            current = torch.cuda.current_stream(self.device)
            for tensor in tensors:
                tensor.record_stream(current)

    @classmethod
    def load(cls, detector: dict[str, Any], pose: dict[str, Any], depth: dict[str, Any], device_name: str,
             precision: str, features: bool = False, deterministic: bool = True, batch_size: int = 16,
             cuda_graphs: Any = "auto") -> Models:
        """The stage's models on `device_name`; the detector runs on batches of up to `batch_size` frames."""
        device = torch.device("cuda" if device_name == "auto" and torch.cuda.is_available() else
                              "cpu" if device_name == "auto" else device_name)
        if device.type == "cuda":
            # Autotuning times candidate convolution kernels in each process and may pick another one per process,
            # hence other bits per shard; deterministic=true takes cuDNN's fixed, deterministic choice instead.
            torch.backends.cudnn.benchmark = not deterministic
            torch.backends.cudnn.deterministic = deterministic
        used = [("pose", pose)] if detector["kind"] == "gt" else [("detector", detector), ("pose", pose)]
        for label, part in used:
            if not part.get("checkpoint"):
                log.warning("stage.%s.checkpoint is null: %s runs with seeded RANDOM weights (tests, demo and "
                            "benchmarks only)", label, part["config"])
        # A call never gets more than one batch's frames: compiled networks pad to these sizes, so no larger.
        pose_batch = min(int(pose.get("batch_size", 64)), batch_size)
        depth_batch = min(int(depth.get("batch_size", 16)), batch_size)
        graphs = cuda_graphs_setting(cuda_graphs, device)
        return cls(
            device=device,
            detector=None if detector["kind"] == "gt" else Detector(
                resolve_config(detector["config"]), str(model_checkpoint("detector", detector)), device, precision,
                int(detector.get("person_label", 0)), detector.get("test_cfg"), batch_size,
                compile_setting(detector.get("compile", "auto"), device), graphs),
            pose=PoseEstimator(resolve_config(pose["config"]), str(model_checkpoint("pose", pose)), device, precision,
                               features, pose_batch, compile_setting(pose.get("compile", "auto"), device), graphs),
            depth=DepthEstimator(resolve_depth_model(depth["model"]), device, precision, features, depth_batch,
                                 compile_setting(depth.get("compile", "auto"), device), graphs),
            score_threshold=float(detector.get("score_threshold", 0.3)),
            pose_batch=pose_batch,
        )


@contextmanager
def _on(stream: torch.cuda.Stream | None, finish: bool) -> Iterator[None]:
    """Device work queued in the block goes to `stream` (none: the current one, as on the CPU); with `finish`, the
    host waits for it at the block's end."""
    if stream is None:
        yield
        return
    with torch.cuda.stream(stream):
        yield
    if finish:
        stream.synchronize()


def run_frames(models: Models, frames: list[torch.Tensor], annotated: Sequence[np.ndarray | None],
               radius: int, use_annotated: Sequence[bool]) -> list[dict[str, np.ndarray]]:
    """The schema's arrays for each frame (3, H, W) uint8 RGB on the models' device, given each frame's annotated
    box (or None), every step in this thread. `use_annotated[i]`: frame i takes its annotated box even with a
    detector (datasets in GT-box mode, e.g. 3DPW). The depth forwards need only which frames have a box, so they are
    queued before the pose model: the device runs them while the host waits for the keypoints."""
    boxes = choose_boxes(models, frames, annotated, use_annotated)
    return keypoint_arrays(models, frames, boxes, depth_forwards(models, frames, boxes), radius)


def keypoint_arrays(models: Models, frames: list[torch.Tensor], boxes: list[np.ndarray | None],
                    depths: list[DepthRow | None], radius: int) -> list[dict[str, np.ndarray]]:
    """The schema's arrays for each frame given its chosen box and its depth (`depth_forwards`; None without a
    box): keypoints, then depth at them."""
    poses = estimate_keypoints(frames, boxes, models.pose, models.pose_batch)
    sampled = sample_depths(depths, poses, radius)
    channels = feature_channels(models)
    return [frame_arrays(tuple(frame.shape[1:]), box, pose, depth, radius, channels)
            for frame, box, pose, depth in zip(frames, boxes, poses, sampled)]


def feature_channels(models: Models) -> dict[str, int]:
    """Channels of the optional per-joint feature arrays, by key; empty when features are off."""
    if not models.pose.features:
        return {}
    return {"pose_features": models.pose.feature_channels, "depth_features": models.depth.feature_channels}


def choose_boxes(models: Models, frames: list[torch.Tensor], annotated: Sequence[np.ndarray | None],
                 use_annotated: Sequence[bool]) -> list[np.ndarray | None]:
    """One (5,) box per frame, or None: the annotated box itself (detector=gt, or the frame's dataset is in GT-box
    mode) or selection.py's pick among the detector's person boxes."""
    detect = [i for i, flag in enumerate(use_annotated) if models.detector is not None and not flag]
    detections = dict(zip(detect, models.detector([frames[i] for i in detect]))) if detect else {}
    chosen = []
    for index, gt in enumerate(annotated):
        if index not in detections:
            chosen.append(None if gt is None else select_person(np.asarray(gt)[None, :4], np.ones(1), None, 0.0))
            continue
        boxes, scores = detections[index]
        annotated_box = None if gt is None else np.asarray(gt, dtype=np.float64)
        chosen.append(select_person(boxes, scores, annotated_box, models.score_threshold))
    return chosen


def estimate_keypoints(frames: list[torch.Tensor], boxes: list[np.ndarray | None], pose: CropModel,
                       batch: int) -> list[dict[str, np.ndarray] | None]:
    """For each frame with a box: H36M-17 `keypoints` (17, 2) frame px, `scores` (17,) and, when the model gives
    them, `pose_features` (17, C) float16. Crop, model, back to the frame, COCO -> H36M; per `batch` crops."""
    todo = [index for index, box in enumerate(boxes) if box is not None]
    crops = [TopdownCrop.from_box(boxes[index], pose.input_size, pose.padding) for index in todo]
    out: list[dict[str, np.ndarray] | None] = [None] * len(frames)
    for part in chunks(len(todo), batch):
        members, chunk = todo[part], crops[part]
        keypoints, scores, features = pose(warp_crops([frames[i] for i in members], chunk))
        image_points = coco_to_h36m(to_image(chunk, keypoints))
        h36m_scores = coco_to_h36m(scores[..., None])[..., 0]
        h36m_features = None if features is None else coco_to_h36m(features).astype(np.float16)
        for row, index in enumerate(members):
            out[index] = {"keypoints": image_points[row], "scores": h36m_scores[row]}
            if h36m_features is not None:
                out[index]["pose_features"] = h36m_features[row]
    return out


def to_image(crops: Sequence[TopdownCrop], points: np.ndarray) -> np.ndarray:
    """Crop px (n, K, 2) back to each crop's frame (TopdownCrop.to_image for the whole chunk at once)."""
    size = np.asarray(crops[0].input_size, dtype=np.float64)
    scale = np.array([crop.scale for crop in crops])[:, None, :]
    center = np.array([crop.center for crop in crops])[:, None, :]
    return np.asarray(points, dtype=np.float64) / size * scale + center - scale / 2


@dataclass
class DepthForward:
    """One depth forward's output: frames of `image_size`, their depth (B, h, w) and, with features, the decoder's
    last fused maps (else None)."""

    image_size: tuple[int, int]
    depth: torch.Tensor
    decoder_maps: torch.Tensor | None

    def tensors(self) -> list[torch.Tensor]:
        return [self.depth] if self.decoder_maps is None else [self.depth, self.decoder_maps]


@dataclass
class DepthRow:
    """A frame's depth: row `row` of a forward it shares with the batch's other frames of its size."""

    forward: DepthForward
    row: int


def depth_forwards(models: Models, frames: list[torch.Tensor],
                   boxes: list[np.ndarray | None]) -> list[DepthRow | None]:
    """Per frame its depth, for each frame with a box (else None); one forward per resolution (and per depth batch),
    queued, not waited for."""
    with_box = [index for index, box in enumerate(boxes) if box is not None]
    out: list[DepthRow | None] = [None] * len(frames)
    for size, group in same_size([frames[index] for index in with_box]).items():
        members = [with_box[position] for position in group]
        for part in chunks(len(members), models.depth.batch_size):
            indices = members[part]
            forward = DepthForward(size, *models.depth(torch.stack([frames[i] for i in indices])))
            for row, index in enumerate(indices):
                out[index] = DepthRow(forward, row)
    return out


def sample_depths(depths: list[DepthRow | None], poses: list[dict[str, np.ndarray] | None],
                  radius: int) -> list[dict[str, np.ndarray] | None]:
    """Per-joint depth (sampling.py) of each frame at its keypoints, one call per forward; None where it has no
    depth."""
    out: list[dict[str, np.ndarray] | None] = [None] * len(depths)
    forwards: dict[int, tuple[DepthForward, list[int]]] = {}
    for index, depth in enumerate(depths):
        if depth is not None:
            forwards.setdefault(id(depth.forward), (depth.forward, []))[1].append(index)
    for forward, members in forwards.values():
        members.sort(key=lambda index: depths[index].row)
        if [depths[index].row for index in members] != list(range(len(forward.depth))):
            raise RuntimeError("a depth forward's frames are not all in the batch being sampled")
        keypoints = np.stack([poses[index]["keypoints"] for index in members])
        sampled = joint_depths(forward.depth, forward.image_size, keypoints, radius)
        if forward.decoder_maps is not None:
            sampled["depth_features"] = features_at(forward.decoder_maps, keypoints, forward.image_size)
        for row, index in enumerate(members):
            out[index] = {key: value[row] for key, value in sampled.items()}
    return out


def frame_arrays(image_size: tuple[int, int], box: np.ndarray | None, pose: dict[str, np.ndarray] | None,
                 depth: dict[str, np.ndarray] | None, radius: int,
                 feature_channels: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """The schema's arrays for one frame (plus the optional feature arrays); zeros and detected=False when it has
    no person."""
    detected = box is not None and pose is not None and depth is not None
    zeros = np.zeros(JOINTS, dtype=np.float32)
    features = {
        key: ({**pose, **depth}[key] if detected else np.zeros((JOINTS, channels), np.float16))
        for key, channels in (feature_channels or {}).items()
    }
    return features | {
        "keypoints": pose["keypoints"].astype(np.float32) if detected else np.zeros((JOINTS, 2), np.float32),
        "scores": pose["scores"].astype(np.float32) if detected else zeros,
        "depth_point": depth["depth_point"] if detected else zeros,
        "depth_min": depth["depth_min"] if detected else zeros,
        "depth_max": depth["depth_max"] if detected else zeros,
        "in_image": depth["in_image"] if detected else np.zeros(JOINTS, bool),
        "bbox": box.astype(np.float32) if detected else np.zeros(5, np.float32),
        "image_size": np.array(image_size, dtype=np.int32),
        "detected": np.array(detected),
        "depth_radius": np.array(radius, dtype=np.int32),
    }
