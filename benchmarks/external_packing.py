"""GPU packing of external tools vs one tool at a time, on the same items, in one run.

    python benchmarks/external_packing.py [--items 12] [--tool-mb 15000] [--gpu-mb 80000] [--seconds 2] [--real-gpu]

Default (any machine): a stand-in tool that holds the GPU for `--seconds` and reports `--tool-mb` of peak memory
(the issue's 14-17 GB tools), packed into a `--gpu-mb` GPU by the reported figure: this measures the scheduling
(first item alone, then floor(0.9 * free / peak) workers) and the per-item cost of a fresh process, not a GPU.
`--real-gpu` (needs torch with CUDA and nvidia-ml-py): the tool really allocates `--tool-mb` on the GPU and keeps
it busy with matmuls; workers come from NVML's measurement. Also reported: the cost of one tool start (a tool that
does nothing), the floor under every item's time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from shardprep.datasets.base import Item
from shardprep.stages.base import Work
from shardprep.stages.external.stage import ExternalStage

TOOL = r'''
import argparse, sys, time
from pathlib import Path
import numpy as np
p = argparse.ArgumentParser()
p.add_argument("--out"); p.add_argument("--mb", type=float); p.add_argument("--seconds", type=float)
p.add_argument("--real-gpu", type=int)
a = p.parse_args()
if a.real_gpu:
    import torch
    hold = torch.empty(int(a.mb * 2**20), dtype=torch.uint8, device="cuda")
    x = torch.randn(4096, 4096, device="cuda")
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        x = (x @ x).tanh_()
    torch.cuda.synchronize()
    print(f"SHARDPREP_PEAK_MEMORY_MB={torch.cuda.max_memory_reserved() / 2**20:.0f}")
else:
    time.sleep(a.seconds)
    print(f"SHARDPREP_PEAK_MEMORY_MB={a.mb}")
np.save(Path(a.out) / "done.npy", np.ones(1))
'''


def run_mode(folder: Path, name: str, items: int, gpu: dict, options: dict) -> dict:
    stage = ExternalStage(
        name=name,
        command=["{python}", "tool.py", "--out", "{output}", "--mb", "{mb}", "--seconds", "{seconds}",
                 "--real-gpu", "{real_gpu}"],
        outputs={"result": {"done.npy": [1]}},
        log_dir=str(folder / name / "logs"), scratch_dir=str(folder / name / "scratch"), cwd=str(folder),
        python_env=sys.prefix, options=options, gpu=gpu, batch_size=items,
    )
    stage.validate()
    stage.setup()
    works = [Work(Item(f"v{i:03d}"), {"path": "unused"}) for i in range(items)]
    started = time.monotonic()
    results = stage.process(works)
    seconds = time.monotonic() - started
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed[0]
    return {"mode": name, "items": items, "wall_s": round(seconds, 2), "items_per_s": round(items / seconds, 3),
            "workers_after_first": stage.packer.workers(), "measured_peak_mb": stage.packer.peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--tool-mb", type=float, default=15000)
    parser.add_argument("--gpu-mb", type=float, default=80000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--real-gpu", action="store_true")
    args = parser.parse_args()
    options = {"mb": args.tool_mb, "seconds": args.seconds, "real_gpu": int(args.real_gpu)}
    memory = {"memory": "nvml"} if args.real_gpu else {"memory": "reported", "total_mb": args.gpu_mb}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tool.py").write_text(TOOL)
        rows = [
            run_mode(folder, "one_at_a_time", args.items, {"memory": "none", "max_workers": 1}, options),
            run_mode(folder, "packed", args.items, {**memory, "max_workers": args.max_workers, "safety": 0.9},
                     options),
            run_mode(folder, "tool_start_cost", 8, {"memory": "none", "max_workers": 1}, {**options, "seconds": 0}),
        ]
    rows[-1]["per_item_s"] = round(rows[-1]["wall_s"] / rows[-1]["items"], 3)
    print(json.dumps({"args": vars(args), "numpy": np.__version__, "results": rows}, indent=1))
    print(f"packed / one at a time: {rows[0]['wall_s'] / rows[1]['wall_s']:.2f}x faster "
          f"({rows[1]['workers_after_first']} workers after the first item)")


if __name__ == "__main__":
    main()
