"""shardprep: raw datasets -> per-item checkpoints on a SLURM array -> merged training files.

Data flow, one folder per step: conf -> launch -> runtime -> stages -> checkpoints -> merge -> training files.
"""

__version__ = "0.1.0"
