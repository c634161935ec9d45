"""Events stage throughput: event-image rendering, streaming extraction of a 100M-event clip, MP4 encoding.

    python benchmarks/events_throughput.py [--events 100000000] [--videos 4] [--skip-extract]

- Rendering: the compiled (numba) `EventCanvas` on 1 M and 10 M events against the per-event Python loop (`render_loop`)
  timed on a 200 k sample in the same run and scaled per event.
- Extraction: a synthetic DSEC sequence with `--events` events in 16 s; the stage's real code path (dataset `read`,
  `EventsStage.process`, `ShardStore.write` of the events NPZ and the event image) against the naive way (slice whole
  columns into memory, `np.savez`), each in its own process so its peak RSS is its own.
- MP4: 1 s clips (20 frames of 1440x1080, DSEC's frame size) encoded by `encode_mp4` (PNG bytes piped to ffmpeg,
  libx264 yuv420p, presets medium and veryfast) against the naive way (each frame decoded in Python, raw RGB piped
  to the same encoder), as MP4s per minute on one worker.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from data.dsec_synthetic import make_sequence  # noqa: E402

from shardprep.datasets.dsec import DSECDataset  # noqa: E402
from shardprep.runtime.run_folder import RunFolder  # noqa: E402
from shardprep.stages.base import Work  # noqa: E402
from shardprep.stages.events.render import EventCanvas, render_loop  # noqa: E402
from shardprep.stages.events.slicing import find_window  # noqa: E402
from shardprep.stages.events.stage import EventsStage  # noqa: E402
from shardprep.stages.events.video import encode_mp4  # noqa: E402

CLIP_MS = 16_000


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_render() -> None:
    rng = np.random.default_rng(0)
    sample = 200_000
    x, y = rng.integers(0, 640, sample).astype(np.uint16), rng.integers(0, 480, sample).astype(np.uint16)
    p = rng.integers(0, 2, sample).astype(np.uint8)
    loop_per_event = best_of(1, lambda: render_loop(x, y, p, 640, 480)) / sample
    for count in (1_000_000, 10_000_000):
        x, y = rng.integers(0, 640, count).astype(np.uint16), rng.integers(0, 480, count).astype(np.uint16)
        p = rng.integers(0, 2, count).astype(np.uint8)

        def canvas_render() -> None:
            canvas = EventCanvas(640, 480)
            canvas.add(x, y, p)
            canvas.rgba()

        seconds = best_of(3, canvas_render)
        print(f"render {count / 1e6:>4.0f} M events: EventCanvas {seconds * 1000:7.1f} ms/image, per-event loop "
              f"{loop_per_event * count:6.1f} s/image (from a {sample // 1000} k sample): "
              f"{loop_per_event * count / seconds:,.0f}x faster; {1 / seconds:,.0f}x faster than 1 s/image")


def make_big_sequence(root: Path, events: int) -> Path:
    folder = root / "train" / "big_00_a"
    started = time.perf_counter()
    sequence = make_sequence(folder, duration_ms=CLIP_MS + 400, events_per_ms=-(-events // CLIP_MS) + 1,
                             gaps_ms=(), frames=CLIP_MS // 50 + 2, frame_size=(32, 24))
    print(f"generated a synthetic sequence of {sequence.events / 1e6:.0f} M events in "
          f"{time.perf_counter() - started:.0f} s ({sum(f.stat().st_size for f in folder.rglob('*.h5')) / 2**30:.2f} "
          "GiB Blosc events.h5)")
    return folder


def extract(root: Path, out: Path, mode: str) -> dict[str, float]:
    """One 16 s clip's events NPZ and event image, the stage's way or the naive way; run in its own process."""
    dataset = DSECDataset("dsec", str(root), {"train": "train"}, [CLIP_MS])
    item = dataset.items()[0]
    started = time.perf_counter()
    if mode == "stage":
        stage = EventsStage("events")
        result = stage.process([Work(item, dataset.read(item), frozenset({"events", "image"}))])[0]
        if isinstance(result, BaseException):
            raise result
        RunFolder(out).shard_store(0, stage.outputs, "benchmark").write(item.id, result)
        count = int(result["events"]["count"])
    else:
        import h5py
        from PIL import Image

        clip = dataset.clip(item)
        window = find_window(clip.events_file, clip.start_us, clip.end_us)
        with h5py.File(clip.events_file) as h5:
            arrays = {k: h5["events"][k][window.start:window.stop] for k in ("x", "y", "t", "p")}
        arrays["t"] = (arrays["t"].astype(np.int64) - (clip.start_us - window.t_offset)).astype(np.uint32)
        canvas = EventCanvas(640, 480)
        canvas.add(arrays["x"], arrays["y"], arrays["p"])
        Image.fromarray(canvas.rgba(), "RGBA").save(out / "naive.png")
        np.savez(out / "naive.npz", **arrays)
        count = len(arrays["x"])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "events": count, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def bench_extract(events: int) -> None:
    with tempfile.TemporaryDirectory(dir=REPO / "benchmarks") as tmp:
        root = Path(tmp) / "dsec"
        make_big_sequence(root, events)
        for mode in ("stage", "naive"):
            out = Path(tmp) / mode
            out.mkdir()
            done = subprocess.run([sys.executable, __file__, "--extract-one", mode, str(root), str(out)],
                                  capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.splitlines()[-1])
            print(f"extract 16 s clip, {figures['events'] / 1e6:.0f} M events, {mode:>5}: {figures['seconds']:5.1f} s "
                  f"({figures['events'] / figures['seconds'] / 1e6:.1f} M events/s), peak RSS "
                  f"{figures['peak_rss_gib']:.2f} GiB")


def bench_video(videos: int) -> None:
    from PIL import Image
    from skimage import data, transform

    photo = (transform.resize(data.astronaut(), (1080, 1440), anti_aliasing=True) * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        frames = []
        for index in range(20):
            path = Path(tmp) / f"{index:06d}.png"
            Image.fromarray(np.roll(photo, 12 * index, axis=1)).save(path)
            frames.append(path)
        for preset in ("medium", "veryfast"):
            seconds = best_of(videos, lambda: encode_mp4(Path(tmp) / "clip.mp4", frames, 20, 23, preset))
            print(f"mp4 1 s clip (20 frames 1440x1080) encode_mp4 preset {preset:>8}: {seconds:5.2f} s -> "
                  f"{60 / seconds:5.1f} MP4/min per worker")
        import imageio_ffmpeg

        def naive() -> None:
            writer = imageio_ffmpeg.write_frames(str(Path(tmp) / "naive.mp4"), (1440, 1080), fps=20, codec="libx264",
                                                 quality=None, macro_block_size=2,
                                                 output_params=["-crf", "23", "-preset", "medium"])
            writer.send(None)
            for path in frames:
                writer.send(np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))))
            writer.close()

        seconds = best_of(videos, naive)
        print(f"mp4 1 s clip, naive (Python decode, raw RGB pipe), preset   medium: {seconds:5.2f} s -> "
              f"{60 / seconds:5.1f} MP4/min per worker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000_000, help="events in the 16 s clip")
    parser.add_argument("--videos", type=int, default=3, help="repeats of the MP4 timing")
    parser.add_argument("--skip-extract", action="store_true")
    parser.add_argument("--extract-one", nargs=3, metavar=("MODE", "ROOT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.extract_one:
        mode, root, out = args.extract_one
        print(json.dumps(extract(Path(root), Path(out), mode)))
        return
    bench_render()
    if not args.skip_extract:
        bench_extract(args.events)
    bench_video(args.videos)


if __name__ == "__main__":
    main()
