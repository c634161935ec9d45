"""Training side: merged splits as torch datasets, and a loader that keeps a whole split on the GPU.

`table.py` reads a merged file into row arrays in video order; `windows.py` says which rows make each sample
(MMPose's lifting-dataset windows); `dataset.py` is the torch `Dataset` for a DataLoader; `gpu_loader.py` moves a
split to the device once and gathers batches there; `external.py` does the same for the external-tool packaging.
"""

from shardprep.training.dataset import WindowDataset
from shardprep.training.gpu_loader import GPULoader, memory_needed
from shardprep.training.table import XYCD, Table, merged_split
from shardprep.training.windows import Windows

__all__ = ["XYCD", "GPULoader", "Table", "WindowDataset", "Windows", "memory_needed", "merged_split"]
