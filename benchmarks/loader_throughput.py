"""Loader throughput: samples/s and device memory, a DataLoader with workers vs the GPU-resident loader.

    python benchmarks/loader_throughput.py [--frames 1000000] [--device cuda] [--workers N] [--batch 1024]

Writes a synthetic merged H36M split of `frames` rows (XYCD + S + image_size + valid, H36M imgnames, 2 500-frame
videos) as `launch/merge.py` writes it, reads it with `merged_split`, then for seq_len 1 (frames) and 243 (MMPose's
padded, centred windows) times, in this run:
  dataloader  `torch.utils.data.DataLoader(WindowDataset, num_workers=N, shuffle, pin_memory)`, each batch moved
              to the device (the standard way), fp32;
  gpu         `GPULoader` (bf16 floats, split moved once, windows and gathers on the device).
Each is warmed up, then timed over a fixed number of batches (device synchronised). Memory: the GPU loader's
computed need and torch's peak allocation after loading and iterating. Runs on the CPU too (`--device cpu`), where
the "device" is host memory and only the relative speed means something.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from shardprep.datasets.h36m import H36MAnnotation
from shardprep.runtime.npz import write_npz
from shardprep.training import XYCD, GPULoader, WindowDataset, Windows, merged_split

FRAMES_PER_VIDEO = 2500
FIELDS = (*XYCD, "S")


def write_split(path: Path, frames: int) -> None:
    rng = np.random.default_rng(0)
    videos = -(-frames // FRAMES_PER_VIDEO)
    names = [f"S{1 + v % 11}/S{1 + v % 11}_Act_{v}.54138969/S{1 + v % 11}_Act_{v}.54138969_{f + 1:06d}.jpg"
             for v in range(videos) for f in range(FRAMES_PER_VIDEO)][:frames]
    write_npz(path, {
        "imgname": np.array(names),
        "predicted_keypoints": rng.uniform(0, 1000, (frames, 17, 2)).astype(np.float32),
        "predicted_keypoints_score": rng.uniform(0, 1, (frames, 17)).astype(np.float32),
        "predicted_depth_point": rng.uniform(1, 8, (frames, 17)).astype(np.float32),
        "S": rng.normal(0, 1, (frames, 17, 4)),
        "image_size": np.full((frames, 2), 1000, np.int32),
        "valid": np.ones(frames, bool),
    })


def timed(batches, device: torch.device, count: int, warmup: int = 3) -> float:
    """Samples/s over `count` batches after `warmup`; each batch's tensors touched on the device."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    samples, start = 0, time.perf_counter()
    for _ in range(count):
        batch = next(iterator)
        batch = {name: values.to(device, non_blocking=True) for name, values in batch.items()}
        samples += len(batch["row"])
    sync()
    return samples / (time.perf_counter() - start)


def cycle(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=40, help="timed batches of the DataLoader (GPU: 10x)")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h36m_xycd_train.npz"
        start = time.perf_counter()
        write_split(path, args.frames)
        table = merged_split(path, FIELDS, pattern=H36MAnnotation.pattern)
        print(f"split: {len(table)} frames, {len(table.videos)} videos, written and read in {time.perf_counter() - start:.1f} s")
        for windows in (None, Windows(243, pad=True, target="middle")):
            seq_len = windows.seq_len if windows else 1
            loader = DataLoader(WindowDataset(table, windows), batch_size=args.batch, shuffle=True,
                                num_workers=args.workers, pin_memory=device.type == "cuda",
                                persistent_workers=args.workers > 0)
            naive = timed(cycle(loader), device, args.batches)
            del loader
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            gpu = GPULoader(table, windows, batch_size=args.batch, device=device, dtype=torch.bfloat16, seed=0)
            fast = timed(cycle(gpu), device, args.batches * 10)
            peak = (torch.cuda.max_memory_allocated(device) - base) if device.type == "cuda" else None
            results.append({"seq_len": seq_len, "dataloader_samples_s": round(naive), "gpu_samples_s": round(fast),
                            "speedup": round(fast / naive, 1), "gpu_needed_gib": round(gpu.needed / 2**30, 3),
                            "gpu_peak_gib": None if peak is None else round(peak / 2**30, 3)})
            print(json.dumps(results[-1]), flush=True)
            del gpu
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; workers={args.workers}, batch={args.batch}, frames={args.frames}, cpus={os.cpu_count()}")
    print("| seq_len | DataLoader samples/s | GPU-resident samples/s | speed-up | GPU memory (needed / peak) |")
    print("|---:|---:|---:|---:|---:|")
    for row in results:
        print(f"| {row['seq_len']} | {row['dataloader_samples_s']:,} | {row['gpu_samples_s']:,} | {row['speedup']}x | "
              f"{row['gpu_needed_gib']} / {row['gpu_peak_gib']} GiB |")


if __name__ == "__main__":
    main()
