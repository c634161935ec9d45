"""Run any stage: `python launch/run.py stage=image_stats dataset=demo shards=2`."""

from shardprep.launch.cli import run_stage

if __name__ == "__main__":
    run_stage(None)()
