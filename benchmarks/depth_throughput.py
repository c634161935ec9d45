"""Frames/s of the depth stage on one GPU: the naive way against the stage as built, same frames, same run.

    python benchmarks/depth_throughput.py [--frames 2048] [--naive-frames 48] [--depth small large] [--batch 32]
    python benchmarks/depth_throughput.py --device cpu --frames 12 --naive-frames 2 --batch 2 --depth small  # smoke

Full-size architectures with random weights (the same FLOPs as trained ones): RTMDet-m, RTMPose-l 384x288, Depth
Anything V2 Small and Large metric (`random:small|large`, saved once under ~/.cache). RTMDet's checkpoint is the
tests' one (random but for person-sized, person-class biases), so every frame has a person and pose and depth run
on all of them, as on real data.
Frames are 1000x1000 JPEGs (Human3.6M's size) written first.

(a) naive: one frame at a time, fp32: decode, mmdet `inference_detector`, mmpose `inference_topdown` on the chosen
    box, Depth Anything on the CPU-resized frame, the full-resolution upsample, numpy sampling, write the NPZ.
(b) stage: `DepthStage` as configured by default (bf16 autocast, the three networks compiled on CUDA, JPEGs decoded
    by nvJPEG) fed by the runtime worker's own loop: read-ahead threads, batches, NPZ writes in the background
    through `ShardStore`; also with frames decoded on the CPU, and autotuned instead of deterministic.
Both share the loaded models (and so their weights). Also reported: peak GPU memory of each, the first batches'
warm-up (compilation), the depth model's FLOPs per frame (torch's FLOP counter), its throughput alone at the
stage's batch size (eager, and as the stage runs it), both as a fraction of the bf16 matrix-product rate measured on
this GPU, and how far the stage's outputs are from the naive way's: at bf16, and at fp32 (the same frames again
through an fp32, eager stage), which isolates the pipeline from the precision.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shardprep.datasets.mmpose_npz import MMPoseDataset
from shardprep.runtime.build import build_stage
from shardprep.runtime.config import load_config
from shardprep.runtime.npz import write_npz
from shardprep.runtime.run_folder import RunFolder
from shardprep.runtime.worker import batch_plan, processed_batches
from shardprep.stages.depth.geometry import depth_input_size
from shardprep.stages.depth.keypoints import coco_to_h36m
from shardprep.stages.depth.models import IMAGENET_MEAN, IMAGENET_STD
from shardprep.stages.depth.pipeline import frame_arrays
from shardprep.stages.depth.random_models import SIZES
from shardprep.stages.depth.selection import select_person

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from models.depth_models import rtmdet_checkpoint

DETECTOR = "mmdet::rtmdet/rtmdet_m_8xb32-300e_coco.py"
POSE = "mmpose::body_2d_keypoint/rtmpose/body8/rtmpose-l_8xb256-420e_body8-384x288.py"
SIZE = (1000, 1000)
RADIUS = 3


def make_frames(folder: Path, count: int) -> MMPoseDataset:
    """`count` 1000x1000 JPEGs (the astronaut photo, upscaled and shifted per frame) and their annotation NPZ."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize(SIZE[::-1], Image.BICUBIC)
    base = np.asarray(photo)
    names = []
    for index in range(count):
        name = f"bench/frame_{index:06d}.jpg"
        (folder / "images" / "bench").mkdir(parents=True, exist_ok=True)
        shifted = np.roll(base, 3 * index, axis=1)
        Image.fromarray(shifted).save(folder / "images" / name, quality=95)
        names.append(name)
    center = np.tile([[500.0, 560.0]], (count, 1)) + np.stack([3.0 * np.arange(count) % 1000, np.zeros(count)], 1)
    write_npz(folder / "annotation.npz", {
        "imgname": np.array(names), "center": center, "scale": np.full(count, 4.0),
        "part": np.zeros((count, 17, 3)), "S": np.zeros((count, 17, 4)),
    })
    return MMPoseDataset("bench", str(folder / "annotation.npz"), str(folder / "images"))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive(stage, dataset: MMPoseDataset, items, out: Path) -> float:
    """One frame at a time through the libraries' own single-image APIs, fp32; returns seconds."""
    import cv2
    from mmdet.apis import inference_detector
    from mmpose.apis import inference_topdown
    from mmpose.utils import adapt_mmdet_pipeline

    models = stage.models
    # mmpose's own fix for running an mmdet pipeline after mmpose set the default registry scope (its demos do this).
    models.detector.model.cfg = adapt_mmdet_pipeline(models.detector.model.cfg)
    depth_net = models.depth.model
    mean = np.array(IMAGENET_MEAN) * 255
    std = np.array(IMAGENET_STD) * 255
    synchronize(models.device)
    start = time.perf_counter()
    for item in items:
        payload = dataset.read(item)  # decode in the loop
        image = payload["image"]
        bgr = np.ascontiguousarray(image[..., ::-1])
        det = inference_detector(models.detector.model, bgr).pred_instances
        person = (det.labels == models.detector.decoding.person).cpu().numpy()
        box = select_person(det.bboxes.cpu().numpy()[person], det.scores.cpu().numpy()[person],
                            payload["bbox_gt"], models.score_threshold)
        pose = depth = None
        if box is not None:
            result = inference_topdown(models.pose.model, bgr, bboxes=box[None, :4])[0].pred_instances
            pose = {"keypoints": coco_to_h36m(result.keypoints[0]),
                    "scores": coco_to_h36m(result.keypoint_scores[0][:, None])[:, 0]}
            height, width = image.shape[:2]
            resized = cv2.resize(image.astype(np.float32), depth_input_size((height, width))[::-1],
                                 interpolation=cv2.INTER_CUBIC)
            pixels = torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1)[None]).float().to(models.device)
            with torch.no_grad():
                small = depth_net(pixel_values=pixels).predicted_depth
            full = F.interpolate(small[:, None], (height, width), mode="bilinear", align_corners=True)[0, 0]
            full = full.cpu().numpy()
            depth = naive_sample(full, pose["keypoints"])
        arrays = frame_arrays(image.shape[:2], box, pose, depth, RADIUS)
        write_npz(out / f"{item.id}.npz", arrays)
    synchronize(models.device)
    return time.perf_counter() - start


def naive_sample(full: np.ndarray, keypoints: np.ndarray) -> dict[str, np.ndarray]:
    height, width = full.shape
    point, low, high = (np.zeros(17, np.float32) for _ in range(3))
    inside = np.zeros(17, bool)
    for joint, (x, y) in enumerate(keypoints):
        inside[joint] = -0.5 <= x < width - 0.5 and -0.5 <= y < height - 0.5
        ix, iy = int(np.clip(np.floor(x + 0.5), 0, width - 1)), int(np.clip(np.floor(y + 0.5), 0, height - 1))
        patch = [full[iy + dy, ix + dx] for dy in range(-RADIUS, RADIUS + 1) for dx in range(-RADIUS, RADIUS + 1)
                 if dx * dx + dy * dy <= RADIUS**2 and 0 <= iy + dy < height and 0 <= ix + dx < width]
        point[joint], low[joint], high[joint] = full[iy, ix], min(patch), max(patch)
    return {"depth_point": point, "depth_min": low, "depth_max": high, "in_image": inside}


def staged(stage, dataset: MMPoseDataset, items, run_dir: Path, write: bool = True) -> float:
    """The runtime worker's own loop (read-ahead threads, batches, `stage.process`, background NPZ writes; with
    `write=False` results are dropped instead of written); seconds."""
    store = RunFolder(run_dir).shard_store(0, stage.outputs, "benchmark")
    missing = {item.id: frozenset({"depth"}) for item in items}
    synchronize(stage.models.device)
    start = time.perf_counter()
    batches = batch_plan(items, items, stage.batch_size, stage.fixed_batches)
    for outcomes in processed_batches(stage, dataset, batches, missing, store, set(missing) if write else set()):
        for work, error in outcomes:
            if error is not None:
                raise error
    synchronize(stage.models.device)
    return time.perf_counter() - start


def matmul_peak(device: torch.device) -> float:
    """Dense matrix-product rate, TFLOP/s (median of 10 after warm-up): bf16 8192^3 on a GPU, fp32 2048^3 on CPU."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for repeat in range(13):
        synchronize(device)
        begin = time.perf_counter()
        a @ b
        synchronize(device)
        if repeat >= 3:
            times.append(time.perf_counter() - begin)
    return 2 * size**3 / float(np.median(times)) / 1e12


def depth_alone(stage, batch: int) -> tuple[float, float, float]:
    """(GFLOP per 518x518 frame, frames/s of the depth network alone at `batch`: eager under the stage's autocast,
    and as the stage runs it (its DepthEstimator: compiled on CUDA))."""
    from torch.utils.flop_counter import FlopCounterMode

    from shardprep.stages.depth.models import autocast

    estimator, device = stage.models.depth, stage.models.device
    frames = torch.randint(0, 256, (batch, 3, 518, 518), dtype=torch.uint8, device=device)
    pixels = frames.float()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        estimator.model(pixel_values=pixels[:1])
    gflop = counter.get_total_flops() / 1e9

    def eager() -> None:
        with torch.no_grad(), autocast(device, stage.precision):
            estimator.model(pixel_values=pixels)

    return gflop, batch * rate(eager, device), batch * rate(lambda: estimator(frames), device)


def rate(run, device: torch.device) -> float:
    """Calls per second of `run` (3 warm-up calls, then 10 timed; 1 of each on the CPU)."""
    repeats = 10 if device.type == "cuda" else 1
    for _ in range(min(3, repeats)):
        run()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    synchronize(device)
    return repeats / (time.perf_counter() - start)


def stage_config(folder: Path, size: str, args: argparse.Namespace, precision: str, compile_networks: str) -> dict:
    return load_config([
        "stage=depth", f"stage.detector.config={DETECTOR}",
        f"stage.detector.checkpoint={rtmdet_checkpoint(folder / 'rtmdet-m.pth', DETECTOR)}",
        "stage.detector.score_threshold=0.0", f"stage.pose.config={POSE}", "stage.pose.checkpoint=null",
        f"stage.depth.model=random:{size}", f"stage.batch_size={args.batch}", f"stage.depth.batch_size={args.batch}",
        f"stage.read_workers={args.read_workers}", f"stage.device={args.device}", f"stage.precision={precision}",
        *(f"stage.{part}.compile={compile_networks}" for part in ("detector", "pose", "depth")),
    ])


def parts(stage, dataset: MMPoseDataset, items, batch: int, folder: Path) -> dict[str, float]:
    """ms per batch of each part alone (synchronised, median of 5): CPU decode (PIL, read-ahead threads), the same
    files read in those threads and decoded by nvJPEG (the stage's way on a GPU), upload of decoded frames,
    detector, crops + RTMPose + SimCC, depth, run_frames; the stage's steps as the worker runs them in threads of
    their own (`prepare`: its preparation steps one after the other, decode, detector and depth; `process`: pose
    and depth sampling) and the batch's writes."""
    from concurrent.futures import ThreadPoolExecutor

    from shardprep.stages.base import Work
    from shardprep.stages.depth.decode import frames_on_device
    from shardprep.stages.depth.pipeline import (choose_boxes, depth_forwards, estimate_keypoints, run_frames,
                                                  sample_depths)

    models, device = stage.models, stage.models.device
    chosen = items[:batch]
    with ThreadPoolExecutor(stage.read_workers) as pool:
        payloads = list(pool.map(dataset.read, chosen))
        works = [Work(item, payload, frozenset({"depth"}))
                 for item, payload in zip(chosen, pool.map(stage.reader(dataset), chosen))]
    images = [payload["image"] for payload in payloads]
    annotated = [payload.get("bbox_gt") for payload in payloads]
    flags = [False] * len(images)
    frames = [torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1) for image in images]
    boxes = choose_boxes(models, frames, annotated, flags)
    poses = estimate_keypoints(frames, boxes, models.pose, models.pose_batch)
    prepared = stage.prepare(works)
    results = stage.process(prepared)
    store = RunFolder(folder).shard_store(0, stage.outputs, "benchmark")

    def timed(run) -> float:
        times = []
        for _ in range(6):
            synchronize(device)
            begin = time.perf_counter()
            run()
            synchronize(device)
            times.append(time.perf_counter() - begin)
        return 1e3 * float(np.median(times[1:]))

    def read_all() -> None:
        with ThreadPoolExecutor(stage.read_workers) as pool:
            list(pool.map(dataset.read, chosen))

    def read_and_decode_on_device() -> None:
        with ThreadPoolExecutor(stage.read_workers) as pool:
            frames_on_device(list(pool.map(dataset.read_encoded, chosen)), device)

    out = {"decode_cpu": timed(read_all)}
    if device.type == "cuda":
        out["decode_nvjpeg"] = timed(read_and_decode_on_device)
    out |= {
        "upload": timed(lambda: [torch.from_numpy(np.ascontiguousarray(i)).to(device) for i in images]),
        "detector": timed(lambda: choose_boxes(models, frames, annotated, flags)),
        "crops_pose_simcc": timed(lambda: estimate_keypoints(frames, boxes, models.pose, models.pose_batch)),
        "depth_sampling": timed(lambda: sample_depths(depth_forwards(models, frames, boxes), poses, stage.radius)),
        "run_frames": timed(lambda: run_frames(models, frames, annotated, stage.radius, flags)),
        "prepare": timed(lambda: stage.prepare(works)),
        "process": timed(lambda: stage.process(prepared)),
        "write": timed(lambda: [store.write(work.item.id, result) for work, result in zip(works, results)]),
    }
    return out


def graph_replays(stage) -> dict:
    """The stage's CUDA-graph replays (GraphCache) by name: the three compiled networks and the person decoding;
    None where one is not replayed (not compiled, not on CUDA)."""
    models = stage.models
    replays = {} if models.detector is None else {"detector": models.detector.network.replays,
                                                  "person decoding": models.detector.person_boxes.replays}
    return replays | {"pose": models.pose.network.replays, "depth": models.depth.network.replays}


def gpu_busy(stage, dataset: MMPoseDataset, items, run_dir: Path) -> dict:
    """How busy the GPU is during the worker loop on `items`, from the torch profiler's record of every kernel, copy
    and fill on the device: `busy`, the union of their intervals over the loop's wall time (NaN where the profiler
    records none: no CUPTI); per CUDA stream, ms per batch of its own activity and its longest kernel's name
    (`streams`: the stage's steps' streams, nvJPEG's, capture streams); and the five kernels that took
    the most time, ms per batch (`kernels`)."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall = staged(stage, dataset, items, run_dir)
    spans = [(event.start_ns(), event.start_ns() + event.duration_ns(), event.device_resource_id(), event.name())
             for event in prof.profiler.kineto_results.events()
             if event.device_type() == torch.autograd.DeviceType.CUDA and event.duration_ns() > 0]
    if not spans:
        return {"busy": float("nan"), "streams": {}, "kernels": {}}
    batches = len(items) / stage.batch_size
    streams, kernels = Counter(), Counter()
    longest: dict[int, tuple[int, str]] = {}
    for begin, finish, stream, name in spans:
        kernels[name] += finish - begin
        longest[stream] = max(longest.get(stream, (0, "")), (finish - begin, name))
    for stream in longest:
        streams[stream] = union_ns([(b, f) for b, f, s, _ in spans if s == stream])
    return {
        "busy": union_ns([(begin, finish) for begin, finish, _, _ in spans]) / 1e9 / wall,
        "streams": {f"{stream} ({longest[stream][1][:48]})": ns / 1e6 / batches
                    for stream, ns in streams.most_common()},
        "kernels": {name[:64]: ns / 1e6 / batches for name, ns in kernels.most_common(5)},
    }


def timeline(stage, dataset: MMPoseDataset, items, run_dir: Path, path: Path) -> None:
    """The loop on `items` under the torch profiler, as a gzipped Chrome trace at `path` (open it in Perfetto):
    every thread's ATen ops and CUDA API calls (the Python calls of the main thread only: the profiler's Python
    tracer follows no other), each stream's kernels and copies, on one time axis, to see what the host does while
    the GPU waits. The Python tracer slows the main thread: the trace's rate is not the stage's."""
    import gzip
    import shutil

    from torch.profiler import ProfilerActivity, profile

    # Every thread (the loop's threads start after the profiler; by default only the starting thread is
    # recorded), and the CUDA synchronisations that make a thread wait for a stream.
    threads = torch._C._profiler._ExperimentalConfig(profile_all_threads=True, enable_cuda_sync_events=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True,
                 experimental_config=threads) as prof:
        staged(stage, dataset, items, run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = path.with_suffix("")
    prof.export_chrome_trace(str(plain))
    with plain.open("rb") as source, gzip.open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    plain.unlink()


def union_ns(spans: list[tuple[int, int]]) -> int:
    """Length of the union of [begin, end) intervals."""
    total, start, end = 0, 0, None
    for begin, finish in sorted(spans):
        if end is not None and begin <= end:
            end = max(end, finish)
            continue
        total += 0 if end is None else end - start
        start, end = begin, finish
    return total + (0 if end is None else end - start)


def nvjpeg_behind_default_stream(path: Path, device: torch.device) -> dict[str, float]:
    """ms of one nvJPEG decode (torchvision's `decode_jpeg` on the GPU, called with a side stream current, as the
    stage's decode step does) with the legacy default stream idle, and while a spin kernel of `spin_ms` runs there:
    near `spin_ms` means the decoder waits for the default stream's work."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    side = torch.cuda.Stream(device)

    def decode_ms() -> float:
        begin = time.perf_counter()
        with torch.cuda.stream(side):
            decode_jpeg([data], mode=ImageReadMode.RGB, device=device)
            side.synchronize()
        return 1e3 * (time.perf_counter() - begin)

    def spin() -> None:
        torch.cuda._sleep(200_000_000)  # clock cycles, on the default stream (this thread's current one)

    decode_ms()  # the decoder is created on first use
    idle = decode_ms()
    torch.cuda.synchronize()
    begin = time.perf_counter()
    spin()
    torch.cuda.synchronize()
    spin_ms = 1e3 * (time.perf_counter() - begin)
    spin()
    behind = decode_ms()
    torch.cuda.synchronize()
    return {"idle_ms": idle, "spin_ms": spin_ms, "behind_spin_ms": behind}


def lock_holders(stage, dataset: MMPoseDataset, items, run_dir: Path, raw: Path) -> dict:
    """Which threads hold Python's global lock during the loop on `items`: py-spy attached to this process samples
    the holder 250 times a second (`record --gil --threads`, raw stacks left in `raw`). Returns the share of the
    loop's sampling ticks that found a holder (`held`; a low bound: ticks py-spy failed to read count as none), each
    thread kind's share of those (read, prepare0, prepare1... for the preparation steps, write, MainThread), and the
    five innermost functions holding it."""
    import collections
    import shutil
    import signal
    import subprocess

    spy = shutil.which("py-spy")
    if spy is None:
        sys.exit("--lock-profile needs py-spy on PATH (pip install py-spy)")
    raw.parent.mkdir(parents=True, exist_ok=True)
    sampler = subprocess.Popen([spy, "record", "--pid", str(os.getpid()), "--gil", "--threads", "--nonblocking",
                                "--rate", "250", "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(2)  # attached
    wall = staged(stage, dataset, items, run_dir)
    sampler.send_signal(signal.SIGINT)
    sampler.wait(timeout=120)
    threads, functions = collections.Counter(), collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        threads[frames[0].split(": ", 1)[-1].rsplit("_", 1)[0]] += int(count)  # "thread (7): prepare1_0" -> prepare1
        functions[frames[-1].split(" (")[0]] += int(count)
    total = sum(threads.values()) or 1
    return {"held": total / (250 * wall), "threads": {k: v / total for k, v in threads.most_common()},
            "functions": {k: v / total for k, v in functions.most_common(5)}}


def same_bytes_across_plans(stage, dataset: MMPoseDataset, items, folder: Path) -> bool:
    """The loop over `items` as one shard, and as three shards run last to first with a third of the files deleted
    and redone: every array of every frame bit-identical."""
    from shardprep.runtime.sharding import plan_shards

    one = folder / "plan-one"
    staged(stage, dataset, items, one)
    three = folder / "plan-three"
    for start, end in reversed(plan_shards(items, 3, group=stage.batch_size)):
        staged(stage, dataset, items[start:end], three)
    written = sorted(RunFolder(three).shard_folder(0).glob("*.npz"))
    for path in written[::3]:
        path.unlink()
    staged(stage, dataset, items, three)
    for path in sorted(RunFolder(one).shard_folder(0).glob("*.npz")):
        with np.load(path) as a, np.load(RunFolder(three).shard_folder(0) / path.name) as b:
            if any(not np.array_equal(a[key], b[key]) for key in a.files):
                return False
    return True


def variants(stage, dataset: MMPoseDataset, items, folder: Path, size: str, args: argparse.Namespace,
             graphed: dict[str, bool]) -> dict[str, float]:
    """Seconds of the loop on `items` under other settings, same models (stage.decode=cpu, the process step on the
    default stream, no CUDA graphs, autotuned; `graphed`: whether each graph_replays entry replays, restored after), and
    the fp32 eager stage's run on the naive frames (its files under `folder`, for `agreement`)."""
    # The same models with frames decoded on the CPU in the read-ahead threads (stage.decode=cpu).
    stage.decode = "cpu"
    cpu_decode_s = staged(stage, dataset, items, folder / f"cpu-decode-{size}")
    stage.decode = "auto"
    # The same with the process step on the legacy default stream, as before it had a stream of its own
    # (pipeline.Models says why).
    streams = dict(stage.models.streams)
    stage.models.streams.pop("process", None)
    default_stream_s = staged(stage, dataset, items, folder / f"default-stream-{size}")
    stage.models.streams.update(streams)
    # The same, compiled but not replayed as CUDA graphs (stage.cuda_graphs=false): what the graphs give.
    replays = graph_replays(stage)
    for cache in replays.values():
        if cache is not None:
            cache.enabled = False
    no_graphs_s = staged(stage, dataset, items, folder / f"no-graphs-{size}")
    # The same, autotuned (stage.deterministic=false, which sets these flags): what determinism costs. The
    # graphs are captured again: a capture keeps the kernels cuDNN chose then.
    for name, cache in replays.items():
        if cache is not None:
            cache.enabled = graphed[name]
            cache.graphs.clear()
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    staged(stage, dataset, items[:2 * args.batch], folder / f"warm-tuned-{size}")
    tuned_s = staged(stage, dataset, items, folder / f"tuned-{size}")
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    # The same frames through the stage at fp32, eager: the pipeline's own agreement with the naive way,
    # which bf16 blurs (random weights make RTMPose's SimCC maxima flat, so bf16 moves keypoints far).
    check = build_stage(stage_config(folder, size, args, "fp32", "false"))
    check.setup()
    staged(check, dataset, items[:args.naive_frames], folder / f"fp32-{size}")
    del check
    return {"cpu_decode_s": cpu_decode_s, "default_stream_s": default_stream_s, "no_graphs_s": no_graphs_s,
            "tuned_s": tuned_s}


def host_load(loop: Callable[[], float]) -> tuple[float, dict[str, float]]:
    """Run `loop` (it returns its seconds) and read what else this machine's CPUs did meanwhile, from /proc/stat:
    `others_cpus`, the CPUs busy outside this process (other tenants of a shared host, on average), and `steal`, the
    share of CPU time the hypervisor gave elsewhere. A host-bound loop (V2-Small) slows down with either, so these
    say whether two runs' figures compare."""
    def cpu_jiffies() -> tuple[int, int]:  # (busy, steal), all CPUs, in clock ticks
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return sum(fields[:8]) - idle, fields[7]
    ticks = os.sysconf("SC_CLK_TCK")
    (busy0, steal0), own0 = cpu_jiffies(), os.times()
    seconds = loop()
    (busy1, steal1), own1 = cpu_jiffies(), os.times()
    own = (own1.user - own0.user) + (own1.system - own0.system)
    return seconds, {"others_cpus": max(0.0, (busy1 - busy0) / ticks - own) / seconds,
                     "steal": (steal1 - steal0) / ticks / seconds / (os.cpu_count() or 1)}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def one_preparation_step(stage, dataset: MMPoseDataset, items, folder: Path, size: str) -> float:
    """Seconds of the loop on `items` with the stage's preparation steps (decode, detect, depth) run as one step,
    one batch ahead of `process`: what running each step in a thread of its own, on successive batches, gives."""
    steps = stage.preparation()
    stage.preparation = lambda: (lambda batch: functools.reduce(lambda done, step: step(done), steps, batch),)
    try:
        return staged(stage, dataset, items, folder / f"one-step-{size}")
    finally:  # the later runs measure the stage as built
        del stage.preparation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2048,
                        help="frames for the stage (a few thousand: the loop's fill and drain weigh on short runs)")
    parser.add_argument("--naive-frames", type=int, default=48, help="the first N of them also go the naive way")
    parser.add_argument("--depth", nargs="+", default=["small", "large"], choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--read-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a smoke run of the script)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--main-only", action="store_true",
                        help="only the naive and stage rates, the parts, GPU busy, the preparation as one step and the "
                             "depth model alone (e.g. for a second CPU count): no runs under other settings, no "
                             "shard-plan or fp32 comparison")
    parser.add_argument("--trace", type=Path, metavar="DIR",
                        help="also write a timeline of the loop over 8 batches (torch profiler: every thread's ops and "
                             "CUDA calls, every stream's kernels) to DIR/<model>-trace.json.gz (summed up by "
                             "benchmarks/trace_idle.py)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the stage's loop back to back; its f/s is their median, each run printed")
    parser.add_argument("--lock-profile", type=Path, metavar="DIR",
                        help="also run the loop once under py-spy (pip install py-spy) and report which threads hold "
                             "Python's global lock; its raw stacks go to DIR/<model>-lock.txt")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("depth_throughput.py measures GPU throughput: no CUDA device here (--device cpu for a smoke run)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="depth-bench-") as tmp:
        folder = Path(tmp)
        dataset = make_frames(folder, args.frames)
        items = dataset.items()
        peak = matmul_peak(device)
        first_frame = dataset.image_path(str(dataset.arrays["imgname"][0]))
        probe = nvjpeg_behind_default_stream(first_frame, device) if device.type == "cuda" else {}
        for size in args.depth:
            stage = build_stage(stage_config(folder, size, args, "bf16", "auto"))
            stage.setup()
            start = time.perf_counter()
            staged(stage, dataset, items[:2 * args.batch], folder / f"warm-{size}")  # compile, cudnn autotuning
            warmup_s = time.perf_counter() - start
            naive(stage, dataset, items[:2], ensure(folder / "naive-warm"))
            reset_peak_memory(device)
            naive_s = naive(stage, dataset, items[:args.naive_frames], ensure(folder / f"naive-{size}"))
            naive_mem = peak_memory_gib(device)
            reset_peak_memory(device)
            # The loop repeated back to back: a host-bound loop varies from run to run with what else the host
            # does, and a lever is real only beyond that spread.
            repeats = [host_load(functools.partial(staged, stage, dataset, items, folder / f"stage-{size}-{run}"))
                       for run in range(args.repeats)]
            stage_mem = peak_memory_gib(device)
            stage_runs_fps = [args.frames / seconds for seconds, _ in repeats]
            stage_s = args.frames / float(np.median(stage_runs_fps))
            no_writes_s = float("nan") if args.main_only else \
                staged(stage, dataset, items, folder / f"no-writes-{size}", write=False)
            gflop, eager_fps, alone_fps = depth_alone(stage, args.batch)
            part_ms = parts(stage, dataset, items, args.batch, folder / f"parts-{size}")
            # Over 32 batches: on fewer, the loop's fill and drain (one step running alone) weigh on the figure.
            busy = gpu_busy(stage, dataset, items[:32 * args.batch], folder / f"busy-{size}")
            if args.trace:
                timeline(stage, dataset, items[:8 * args.batch], folder / f"trace-{size}",
                         args.trace / f"{size}-trace.json.gz")
            plans_equal = None if args.main_only else \
                same_bytes_across_plans(stage, dataset, items[:6 * args.batch], folder / f"plans-{size}")
            lock = lock_holders(stage, dataset, items, folder / f"lock-{size}", args.lock_profile / f"{size}-lock.txt") \
                if args.lock_profile else {}
            graphed = {name: cache is not None and cache.enabled for name, cache in graph_replays(stage).items()}
            one_step_s = one_preparation_step(stage, dataset, items, folder, size)
            other = dict.fromkeys(("cpu_decode_s", "default_stream_s", "no_graphs_s", "tuned_s"), float("nan")) \
                if args.main_only else variants(stage, dataset, items, folder, size, args, graphed)
            person_boxes = None if stage.models.detector is None else stage.models.detector.person_boxes
            decoded_again = None if person_boxes is None else [person_boxes.decoded_again, person_boxes.batches]
            del stage
            naive_fps, stage_fps = args.naive_frames / naive_s, args.frames / stage_s
            naive_dir = folder / f"naive-{size}"
            rows.append({
                "depth_model": size, "naive_fps": naive_fps, "stage_fps": stage_fps, "ratio": stage_fps / naive_fps,
                "naive_peak_gib": naive_mem, "stage_peak_gib": stage_mem, "stage_warmup_s": warmup_s,
                "depth_gflop_per_frame": gflop, "depth_eager_fps": eager_fps, "depth_alone_fps": alone_fps,
                "matmul_tflops": peak, "depth_eager_flop_fraction": gflop * eager_fps / 1e3 / peak,
                "depth_alone_flop_fraction": gflop * alone_fps / 1e3 / peak,
                "stage_depth_flop_fraction": gflop * stage_fps / 1e3 / peak,
                "stage_runs_fps": stage_runs_fps, "host_load": [load for _, load in repeats], "cpu": cpu_model(),
                "bf16": agreement(naive_dir, RunFolder(folder / f"stage-{size}-0").shard_folder(0)),
                "fp32": agreement(naive_dir, RunFolder(folder / f"fp32-{size}").shard_folder(0)),
                "parts_ms_per_batch": part_ms, "loop_ms_per_batch": 1e3 * stage_s / (args.frames / args.batch),
                "gpu_busy": busy["busy"], "gpu_streams_ms_per_batch": busy["streams"],
                "gpu_kernels_ms_per_batch": busy["kernels"], "plans_bit_identical": plans_equal,
                "lock_holders": lock, "no_writes_fps": args.frames / no_writes_s,
                "autotuned_fps": args.frames / other["tuned_s"], "cpu_decode_fps": args.frames / other["cpu_decode_s"],
                "no_cuda_graphs_fps": args.frames / other["no_graphs_s"],
                "process_on_default_stream_fps": args.frames / other["default_stream_s"], "nvjpeg_probe": probe,
                "one_preparation_step_fps": args.frames / one_step_s,
                "cuda_graphs": graphed, "person_decoding_again": decoded_again,
                "cpu_decode_vs_nvjpeg": agreement(RunFolder(folder / f"cpu-decode-{size}").shard_folder(0),
                                                  RunFolder(folder / f"stage-{size}-0").shard_folder(0)),
                "cpus": len(os.sched_getaffinity(0)),
                "frames": args.frames, "naive_frames": args.naive_frames, "batch": args.batch,
                "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            })
            if args.json:  # after each model, so a run cut short keeps what it measured
                args.json.write_text(json.dumps(rows, indent=1))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"\n{rows[0]['gpu']}, torch {rows[0]['torch']}, matmul {rows[0]['matmul_tflops']:.2f} TFLOP/s; "
          f"{args.frames} frames 1000x1000 (naive: first {args.naive_frames}), batch {args.batch}")
    print(f"{'depth':>6} {'naive f/s':>10} {'stage f/s':>10} {'ratio':>6} {'naive GiB':>10} {'stage GiB':>10} "
          f"{'warm-up s':>9} {'GFLOP/f':>8} {'DA eager f/s':>12} {'DA stage f/s':>12} {'%peak':>6} "
          f"{'in stage %peak':>14}")
    if probe:
        print(f"one nvJPEG decode from a side stream: {probe['idle_ms']:.1f} ms with the default stream idle, "
              f"{probe['behind_spin_ms']:.1f} ms while a {probe['spin_ms']:.0f} ms kernel runs there")
    for row in rows:
        print(f"{row['depth_model']:>6} {row['naive_fps']:10.2f} {row['stage_fps']:10.2f} {row['ratio']:6.1f} "
              f"{row['naive_peak_gib']:10.2f} {row['stage_peak_gib']:10.2f} {row['stage_warmup_s']:9.1f} "
              f"{row['depth_gflop_per_frame']:8.0f} {row['depth_eager_fps']:12.1f} {row['depth_alone_fps']:12.1f} "
              f"{100 * row['depth_alone_flop_fraction']:5.0f}% {100 * row['stage_depth_flop_fraction']:13.0f}%")
        print(f"{'':>6} {row['cpus']} CPUs; ms per batch of {row['batch']}: " + ", ".join(
            f"{name} {ms:.1f}" for name, ms in row["parts_ms_per_batch"].items()) +
            f"; loop {row['loop_ms_per_batch']:.1f}; GPU busy {100 * row['gpu_busy']:.0f}% of the loop; without "
            f"checkpoint writes {row['no_writes_fps']:.1f} f/s")
        print(f"{'':>6} stage f/s of each run (median above): " + ", ".join(
            f"{fps:.1f} ({load['others_cpus']:.1f} CPUs busy elsewhere, steal {100 * load['steal']:.0f}%)"
            for fps, load in zip(row["stage_runs_fps"], row["host_load"])) + f"; {row['cpu']}")
        print(f"{'':>6} GPU activity per stream, ms per batch (streams under 0.5 ms left out): " + ", ".join(
            f"{name} {ms:.1f}" for name, ms in row["gpu_streams_ms_per_batch"].items() if ms >= 0.5))
        print(f"{'':>6} longest kernels, ms per batch: " + ", ".join(
            f"{name} {ms:.1f}" for name, ms in row["gpu_kernels_ms_per_batch"].items()))
        print(f"{'':>6} preparation (decode, detector, depth) as one step, one batch ahead: "
              f"{row['one_preparation_step_fps']:.1f} f/s; process step on the legacy default stream (as before): "
              f"{row['process_on_default_stream_fps']:.1f} f/s")
        if row["lock_holders"]:
            threads, functions = row["lock_holders"]["threads"], row["lock_holders"]["functions"]
            print(f"{'':>6} Python's lock held in ~{100 * row['lock_holders']['held']:.0f}% of the loop; by thread: "
                  + ", ".join(f"{name} {100 * share:.0f}%" for name, share in threads.items())
                  + "; most: " + ", ".join(f"{name} {100 * share:.0f}%" for name, share in functions.items()))
        again = row["person_decoding_again"]
        print(f"{'':>6} CUDA graphs {row['cuda_graphs']}; without graphs {row['no_cuda_graphs_fps']:.1f} f/s"
              + ("" if again is None else f"; person decoding redone without its graph (walks longer than its "
                                          f"blocks) in {again[0]} of {again[1]} batches"))
        print(f"{'':>6} deterministic {row['stage_fps']:.1f} f/s vs autotuned {row['autotuned_fps']:.1f} f/s; "
              f"decoding on the CPU instead of nvJPEG {row['cpu_decode_fps']:.1f} f/s; "
              f"1 shard vs 3 shards + a third redone bit-identical: {row['plans_bit_identical']}")
        decoders = row["cpu_decode_vs_nvjpeg"]
        print(f"{'':>6} CPU vs nvJPEG decode, same models: median |d keypoint| "
              f"{decoders['median_keypoint_diff_px']:.2f} px, median |d depth_point| {decoders['median_depth_point_diff_m']:.4f} m")
        for precision in ("fp32", "bf16"):
            check = row[precision]
            print(f"{'':>6} stage at {precision} vs naive on {check['frames_detected_by_both']} frames: median "
                  f"|d keypoint| {check['median_keypoint_diff_px']:.2f} px, median |d depth_point| "
                  f"{check['median_depth_point_diff_m']:.4f} m")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset (NaN on the CPU)."""
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def agreement(naive_dir: Path, stage_dir: Path) -> dict[str, float]:
    """How far the stage's outputs are from the naive way's on the frames both processed (they differ by bf16 and
    by torch vs OpenCV resampling): median |keypoint difference| px and |depth_point difference| m."""
    points, depths, both = [], [], 0
    if not stage_dir.is_dir():  # that run was left out (--main-only)
        return {"frames_detected_by_both": 0, "median_keypoint_diff_px": float("nan"),
                "median_depth_point_diff_m": float("nan")}
    for path in sorted(naive_dir.glob("*.npz")):
        with np.load(path, allow_pickle=False) as naive_npz, \
                np.load(stage_dir / path.name, allow_pickle=False) as stage_npz:
            if naive_npz["detected"] and stage_npz["detected"]:
                both += 1
                points.append(np.linalg.norm(naive_npz["keypoints"] - stage_npz["keypoints"], axis=1))
                depths.append(np.abs(naive_npz["depth_point"] - stage_npz["depth_point"]))
    return {"frames_detected_by_both": both, "median_keypoint_diff_px": _median(points),
            "median_depth_point_diff_m": _median(depths)}


def _median(values: list[np.ndarray]) -> float:
    return float(np.median(np.concatenate(values))) if values else float("nan")


def ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    main()
