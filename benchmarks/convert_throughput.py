"""Frame extraction of the convert stage vs MMPose's H36M converter's serial loop, on the same video, in this run.

    python benchmarks/convert_throughput.py [--frames 500] [--sample-rate 5] [--threads 0] [--tasks 20]

Writes one H36M-sized video (1000 x 1002, 50 frames/s, H.264 yuv420p, moving noise so the encoder cannot make it
trivially small) and times extracting every `sample-rate`-th frame as JPEGs:
  converter  the loop of `preprocess_h36m.py`: `cv2.VideoCapture.read()` of every frame, `cv2.imwrite` of every
             sample-rate-th one (what one process does for all ~840 videos of H36M, one after another);
  convert    stages/frames.py `extract_frames`: one ffmpeg process (imageio-ffmpeg's binary), `select` filter,
             `-threads` threads (0: ffmpeg's choice, all CPUs the process may use, as OpenCV's decoder); what one array task does per video.
Both are per task (one video at a time); the projection divides H36M's frames by `tasks` tasks running at once on
separate nodes, each at the measured rate. Frames: `--h36m-frames` video frames at 50 Hz [I: 1.8 M over the seven
subjects' ~840 videos, about 3.7 M is sometimes quoted with S2-S4, S10 counted; pass yours].
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from shardprep.stages.frames import extract_frames, ffmpeg_binary


def write_video(path: Path, frames: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1002 + 64, 1000 + 64, 3), dtype=np.uint8)
    process = subprocess.Popen([ffmpeg_binary(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                                "-s", "1000x1002", "-r", "50", "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
                                "-pix_fmt", "yuv420p", str(path)], stdin=subprocess.PIPE)
    for i in range(frames):
        shift = i % 64
        process.stdin.write(np.ascontiguousarray(base[shift:shift + 1002, shift:shift + 1000]).tobytes())
    process.stdin.close()
    if process.wait():
        raise SystemExit("ffmpeg could not write the benchmark video")


def converter_loop(video: Path, out: Path, sample_rate: int) -> int:
    import cv2

    capture, index, written = cv2.VideoCapture(str(video)), 0, 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if index % sample_rate == 0:
            cv2.imwrite(str(out / f"frame_{index + 1:06d}.jpg"), image)
            written += 1
        index += 1
    capture.release()
    return written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--sample-rate", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--h36m-frames", type=int, default=1_800_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        video = root / "Directions 1.54138969.mp4"
        write_video(video, args.frames)
        (root / "converter").mkdir()
        start = time.perf_counter()
        written = converter_loop(video, root / "converter", args.sample_rate)
        naive = time.perf_counter() - start
        names = [f"frame_{i + 1:06d}.jpg" for i in range(0, args.frames, args.sample_rate)]
        start = time.perf_counter()
        extract_frames(video, args.sample_rate, names, root / "convert", threads=args.threads)
        ours = time.perf_counter() - start
    extracted = len(names)
    assert written == extracted, (written, extracted)
    print(f"machine: {os.cpu_count()} CPUs; video 1000x1002, {args.frames} frames, every {args.sample_rate}th "
          f"extracted ({extracted} JPEGs)")
    print(f"converter loop (cv2 read all + imwrite): {naive:.2f} s, {extracted / naive:.1f} extracted frames/s")
    print(f"convert task (ffmpeg select, {args.threads} thread(s)): {ours:.2f} s, {extracted / ours:.1f} extracted "
          f"frames/s ({naive / ours:.2f}x)")
    total = args.h36m_frames // args.sample_rate
    print(f"H36M ({args.h36m_frames} frames at 50 Hz -> {total} JPEGs): converter, one process: "
          f"{total / (extracted / naive) / 3600:.1f} h; {args.tasks} tasks at this rate each: "
          f"{total / (extracted / ours) / args.tasks / 3600:.2f} h")


if __name__ == "__main__":
    main()
