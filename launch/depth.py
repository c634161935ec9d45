"""Depth stage: `python launch/depth.py dataset=h36m shards=20` (one SLURM array of 20 tasks; re-run to resume)."""

from shardprep.launch.cli import run_stage

if __name__ == "__main__":
    run_stage("depth")()
