"""Run a Python tool's script in this process and print its peak GPU memory as torch's allocator measured it.

    command: ["{python}", "{torch_peak}", "hands.py", "--image", "{input}", ...]

For a tool whose memory NVML cannot watch (it runs in its own container, or the node has no NVML) and that does not
print `SHARDPREP_PEAK_MEMORY_MB=` itself: its script runs unchanged, as `python hands.py ...` would run it (its folder
first on `sys.path`, `__name__ == "__main__"`, its exit status), and at exit, if it used CUDA through torch, this
prints the peak of `torch.cuda.max_memory_reserved()` summed over the devices for `gpu.memory=reported` to read.
Reserved rather than allocated: it adds the blocks torch's caching allocator holds beyond the live tensors, which
take GPU memory just the same. The CUDA context (~0.5 GB) is in neither, so NVML's figure is the better one where it
works.

Only the standard library is imported here, so the tool's own environment needs nothing of shardprep.
"""

import atexit
import os
import runpy
import sys


def report_peak() -> None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    peak = sum(torch.cuda.max_memory_reserved(device) for device in range(torch.cuda.device_count()))
    print(f"SHARDPREP_PEAK_MEMORY_MB={peak / 2**20:.0f}", flush=True)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python torch_peak.py script.py [arguments of the script...]")
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    # As `python script.py` does: the script's folder, not this one (whose modules could shadow the tool's), first.
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    atexit.register(report_peak)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
