"""DSEC events stage: `python launch/events.py dataset=dsec shards=16` (one SLURM array of 16 tasks; re-run to resume)."""

from shardprep.launch.cli import run_stage

if __name__ == "__main__":
    run_stage("events")()
