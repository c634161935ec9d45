"""How many tool processes fit on this task's GPU at once, from measured memory, not from a guess in a config.

The first item runs alone and its peak memory is measured; then `floor(safety * free / peak)` items run at once
(bounded by `max_workers`), where `free` is the GPU's free memory plus what our own running tools hold, and `peak` the
largest peak seen so far — so a longer video that needs more memory lowers the count for what follows.

Two sources of the figures:
- `nvml`: NVML's per-process GPU memory, sampled while the tool runs, summed over every process of the tool's session
  (the tool may start children). Needs `nvidia-ml-py` and a GPU.
- `reported`: the tool prints `SHARDPREP_PEAK_MEMORY_MB=<n>` (e.g. from `torch.cuda.max_memory_allocated`), and the
  GPU size comes from the config. This is also how the logic is tested on machines without a GPU.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol

from shardprep.runtime.errors import ConfigError

log = logging.getLogger(__name__)

REPORT = re.compile(rb"SHARDPREP_PEAK_MEMORY_MB=([0-9.]+)")
SAMPLE_INTERVAL_S = 0.2


class MemorySource(Protocol):
    def free_mb(self) -> float:
        """Free memory of the device now."""

    def start(self, pid: int) -> None:
        """Begin watching the tool whose session leader is `pid`."""

    def finish(self, pid: int, log: Path) -> float | None:
        """Stop watching; the tool's peak memory in MiB, or None where nothing was measured."""

    def in_use_mb(self) -> float:
        """What the tools now watched hold together."""


class ReportedMemory:
    """Peaks printed by the tool into its log; `total_mb` stands in for the free memory of an idle GPU."""

    def __init__(self, total_mb: float) -> None:
        if total_mb <= 0:
            raise ConfigError("stage.gpu.total_mb must be > 0 with stage.gpu.memory=reported (the GPU's memory)")
        self.total_mb = float(total_mb)

    def free_mb(self) -> float:
        return self.total_mb

    def in_use_mb(self) -> float:
        return 0.0  # the tools' use is not visible while they run; free_mb already ignores it

    def start(self, pid: int) -> None:
        pass

    def finish(self, pid: int, log: Path) -> float | None:
        return reported_peak(log)


def reported_peak(log: Path, max_bytes: int = 1 << 20) -> float | None:
    """The last `SHARDPREP_PEAK_MEMORY_MB=` figure of the last run in the log."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log) - max_bytes))
            text = handle.read()
    except OSError:
        return None
    # Runs are appended to one log, each opened by a `=== <time> $ <command>` line: read only the last run.
    runs = text.split(b"\n=== ")
    last = max((i for i, run in enumerate(runs) if b" $ " in run.split(b"\n", 1)[0]), default=0)
    found = REPORT.findall(b"\n".join(runs[last:]))
    return float(found[-1]) if found else None


class NvmlMemory:
    """NVML, sampled in a background thread: per watched session, the peak of the summed memory of its processes."""

    def __init__(self, device_index: int, nvml: Any = None) -> None:
        if nvml is None:
            import pynvml as nvml  # nvidia-ml-py; imported here so machines without it can use the other sources

        self._nvml = nvml
        nvml.nvmlInit()
        self._handle = nvml.nvmlDeviceGetHandleByIndex(device_index)
        self._peaks: dict[int, float] = {}
        self._now: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._sample_loop, name="nvml-sampler", daemon=True).start()

    def free_mb(self) -> float:
        return self._nvml.nvmlDeviceGetMemoryInfo(self._handle).free / 2**20

    def in_use_mb(self) -> float:
        with self._lock:
            return sum(self._now.values())

    def start(self, pid: int) -> None:
        with self._lock:
            self._peaks[pid] = 0.0
            self._now[pid] = 0.0

    def finish(self, pid: int, log: Path) -> float | None:
        self._sample()
        with self._lock:
            self._now.pop(pid, None)
            peak = self._peaks.pop(pid, 0.0)
        # A tool that finished between two samples shows nothing; fall back to what it reported, if anything.
        return peak if peak > 0 else reported_peak(log)

    def _sample_loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            try:
                self._sample()
            except Exception as error:  # NVML hiccups must not kill the task; the next sample tries again
                log.debug("NVML sample failed: %s", error)

    def _sample(self) -> None:
        with self._lock:
            sessions = set(self._peaks)
        if not sessions:
            return
        used: dict[int, float] = dict.fromkeys(sessions, 0.0)
        for process in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
            try:
                session = os.getsid(process.pid)
            except OSError:  # gone, or a process of another container's pid namespace
                continue
            if session in used and process.usedGpuMemory:
                used[session] += process.usedGpuMemory / 2**20
        with self._lock:
            for session, mb in used.items():
                if session in self._peaks:
                    self._now[session] = mb
                    self._peaks[session] = max(self._peaks[session], mb)


def make_source(kind: str, total_mb: float) -> MemorySource | None:
    """`auto`: NVML where a GPU answers, else the reported figures if `total_mb` is set, else no packing."""
    if kind == "none":
        return None
    if kind in ("nvml", "auto"):
        try:
            return NvmlMemory(_cuda_device_index())
        except Exception as error:  # no library, no driver, no GPU
            if kind == "nvml":
                raise RuntimeError(f"stage.gpu.memory=nvml but NVML is not usable here ({error}); install "
                                   "nvidia-ml-py on a GPU node, or use memory=reported") from None
            log.info("NVML not usable (%s); packing on the tools' reported memory", error)
    if kind in ("reported", "auto") and total_mb > 0:
        return ReportedMemory(total_mb)
    if kind == "reported":
        return ReportedMemory(total_mb)  # raises the ConfigError that says what to set
    return None


def _cuda_device_index() -> int:
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


class Packer:
    """The worker count: 1 until a peak is known, then floor(safety * free / peak) within [1, max_workers]."""

    def __init__(self, source: MemorySource | None, max_workers: int, safety: float = 0.9) -> None:
        if max_workers < 1:
            raise ConfigError(f"stage.gpu.max_workers={max_workers}: must be >= 1")
        if not (0 < safety <= 1):
            raise ConfigError(f"stage.gpu.safety={safety}: must be in (0, 1]")
        self.source = source
        self.max_workers = max_workers
        self.safety = safety
        self.peak_mb: float | None = None

    def workers(self) -> int:
        if self.source is None:
            return self.max_workers
        if self.peak_mb is None:
            return 1
        available = self.source.free_mb() + self.source.in_use_mb()
        return workers_for(available, self.peak_mb, self.safety, self.max_workers)

    def observe(self, peak_mb: float | None) -> None:
        if peak_mb is not None and peak_mb > 0:
            self.peak_mb = max(self.peak_mb or 0.0, peak_mb)


def check_packing(kind: str, max_workers: int, safety: float, total_mb: float) -> None:
    """The GPU settings, checked before submission (the same checks `Packer` and `make_source` make in each task)."""
    Packer(None, max_workers, safety)
    if kind == "reported":
        ReportedMemory(total_mb)


def workers_for(free_mb: float, peak_mb: float, safety: float, max_workers: int) -> int:
    return max(1, min(max_workers, math.floor(safety * free_mb / peak_mb)))
