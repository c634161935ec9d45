"""Per-shard progress of a run: `python launch/status.py dataset=h36m stage=depth [output=json] [resubmit=true]`."""

from shardprep.launch.cli import status_main

if __name__ == "__main__":
    status_main()
