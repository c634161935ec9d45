"""What decides the depth stage's output bits besides its fingerprint: the device and the numeric libraries.

The same weights and frames give the same bytes only on the same device model with the same driver, CUDA, cuDNN and
library versions (kernels, their choice and their reduction order change between them). The stage reports these so
a resume on other hardware or software is noticed and the merged files say what made them.
"""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version

import torch

LIBRARIES = ("torch", "mmcv", "mmengine", "mmdet", "mmpose", "transformers", "numpy")


def environment(device: torch.device) -> dict[str, str]:
    found = {name: _version(name) for name in LIBRARIES}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        found |= {"device": torch.cuda.get_device_name(index), "driver": _driver(), "cuda": str(torch.version.cuda),
                  "cudnn": str(torch.backends.cudnn.version())}
    else:
        found |= {"device": f"cpu {_cpu_model()}"}
    return found


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def _driver() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else "unknown"


def _cpu_model() -> str:
    """The CPU's model name (its vector units decide which kernels run), from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
