"""What each host thread does while the GPU waits, from a timeline `depth_throughput.py --trace DIR` wrote.

    python benchmarks/trace_idle.py DIR/small-trace.json.gz [--batches 8]

Reads the torch profiler's Chrome trace: GPU activity (`kernel`, `gpu_memcpy`, `gpu_memset` events, one track per
stream) and each host thread's ATen ops (`cpu_op`) and CUDA API calls (`cuda_runtime`, `cuda_driver`). Over the span
from the first to the last GPU event, it prints how busy the GPU and each stream were, then, per thread, the ms per
batch that the thread spent while no stream was busy: waiting in a CUDA synchronisation (a stream or event sync, a
blocking copy), in other CUDA calls (launches, graph replays), in ATen ops, or in none of these (Python, numpy,
waiting on a lock or a future). The GPU waits on the host where the idle time is not some thread's synchronisation.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

GPU = ("kernel", "gpu_memcpy", "gpu_memset")
HOST = ("cpu_op", "cuda_runtime", "cuda_driver")
SYNCS = ("Synchronize", "cudaMemcpy", "cuMemcpy")  # calls that block the thread until the device has caught up
BIN_US = 10.0


def covered(spans: list[tuple[float, float]], start: float, bins: int) -> np.ndarray:
    """(bins,) bool: the time bins of BIN_US from `start` that any span [begin, end) in microseconds touches."""
    marks = np.zeros(bins + 1, dtype=np.int64)
    for begin, end in spans:
        first, last = bin_range(begin, end, start, bins)
        if last > first:
            marks[first] += 1
            marks[last] -= 1
    return np.cumsum(marks)[:bins] > 0


def bin_range(begin: float, end: float, start: float, bins: int) -> tuple[int, int]:
    """The time bins [first, last) of BIN_US from `start` that the span [begin, end) in microseconds touches."""
    first = min(max(int((begin - start) // BIN_US), 0), bins)
    return first, min(max(int(np.ceil((end - start) / BIN_US)), 0), bins)


def state_of(event: dict) -> str:
    if event["cat"] == "cpu_op":
        return "aten op"
    return "CUDA sync" if any(word in event["name"] for word in SYNCS) else "CUDA call"


def report(trace: dict, batches: int) -> list[str]:
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    device = [e for e in events if e.get("cat") in GPU]
    if not device:
        return ["no GPU activity in the trace (a CPU run?)"]
    start = min(e["ts"] for e in device)
    bins = int(np.ceil((max(e["ts"] + e["dur"] for e in device) - start) / BIN_US))
    busy = covered([(e["ts"], e["ts"] + e["dur"]) for e in device], start, bins)
    idle = ~busy
    per_batch = BIN_US / 1e3 / batches
    lines = [f"{bins * per_batch:.1f} ms per batch from the first to the last GPU event; GPU busy "
             f"{100 * busy.mean():.0f}%, idle {idle.sum() * per_batch:.1f} ms per batch"]
    streams: dict[object, list[tuple[float, float]]] = defaultdict(list)
    for e in device:
        streams[e.get("tid")].append((e["ts"], e["ts"] + e["dur"]))
    kernels: dict[object, Counter] = defaultdict(Counter)
    for e in device:
        kernels[e.get("tid")][e["name"][:60]] += e["dur"] / 1e3 / batches
    masks = {}
    for stream, spans in sorted(streams.items(), key=lambda item: -len(item[1])):
        masks[stream] = covered(spans, start, bins)
        top = "; ".join(f"{name} {ms:.1f}" for name, ms in kernels[stream].most_common(3))
        lines.append(f"  stream {stream}: busy {masks[stream].sum() * per_batch:.1f} ms per batch (longest: {top})")
    if len(masks) > 1:
        # Two steps' streams overlap only where both have work queued and the GPU has room for both.
        first, second = list(masks)[:2]
        lines.append(f"  streams {first} and {second} both busy {(masks[first] & masks[second]).sum() * per_batch:.1f}"
                     " ms per batch")
    threads: dict[object, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    ops: dict[object, Counter] = defaultdict(Counter)
    op_spans: dict[object, list[tuple[float, float, str]]] = defaultdict(list)
    for e in events:
        if e.get("cat") in HOST:
            threads[e["tid"]][state_of(e)].append((e["ts"], e["ts"] + e["dur"]))
            if e["cat"] == "cpu_op":
                ops[e["tid"]][e["name"]] += 1
                op_spans[e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    tops = {thread: outermost(sorted(spans, key=lambda span: (span[0], -span[1])))
            for thread, spans in op_spans.items()}
    lines.append("while the GPU is idle, ms per batch each thread spends in:")
    for thread, states in sorted(threads.items(), key=lambda item: -sum(len(v) for v in item[1].values())):
        # A bin counts once per thread, for the most blocking state it is in (a sync inside an op is a sync).
        left = idle.copy()
        parts = []
        for state in ("CUDA sync", "CUDA call", "aten op"):
            inside = covered(states.get(state, []), start, bins) & left
            left &= ~inside
            parts.append(f"{state} {inside.sum() * per_batch:.1f}")
        parts.append(f"none of these {left.sum() * per_batch:.1f}")
        names = ", ".join(name for name, _ in ops[thread].most_common(3))
        lines.append(f"  thread {thread} ({names or 'no ATen ops'}): " + ", ".join(parts))
        during = idle_ops(tops.get(thread, []), idle, start, bins)
        if during:
            lines.append("    its outermost ops while the GPU is idle: " + "; ".join(
                f"{name} {count * per_batch:.1f}" for name, count in during.most_common(4)))
    return lines


def outermost(spans: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The ops of one thread that no other op of it contains (`spans` sorted by start)."""
    tops: list[tuple[float, float, str]] = []
    for span in spans:
        if not tops or span[0] >= tops[-1][1]:
            tops.append(span)
    return tops


def idle_ops(spans: list[tuple[float, float, str]], idle: np.ndarray, start: float, bins: int) -> Counter:
    """Idle GPU time bins inside each outermost op name."""
    counts: Counter = Counter()
    for begin, end, name in spans:
        first, last = bin_range(begin, end, start, bins)
        counts[name] += int(idle[first:last].sum())
    return +counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path, help="a .json.gz (or .json) Chrome trace of the torch profiler")
    parser.add_argument("--batches", type=int, default=8, help="batches the trace covers (--trace records 8)")
    args = parser.parse_args()
    opener = gzip.open if args.trace.suffix == ".gz" else open
    with opener(args.trace, "rt") as source:
        print("\n".join(report(json.load(source), args.batches)))


if __name__ == "__main__":
    main()
