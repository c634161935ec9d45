"""An HTML report of a run: `python launch/report.py dataset=demo stage=depth_demo [n=4]` writes
`<out_dir>/report/index.html` and its images (docs/report.md)."""

from collections.abc import Sequence

from shardprep.launch.cli import guarded
from shardprep.report.build import write_report
from shardprep.runtime.config import load_config
from shardprep.runtime.errors import ConfigError
from shardprep.runtime.run_folder import RunFolder


@guarded
def main(argv: Sequence[str]) -> int:
    config = load_config(argv, strict=False)  # only reads a run, like status
    n = config["n"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ConfigError(f"n={n!r}: how many items to preview, a whole number >= 0")
    print(f"report: {write_report(RunFolder(config['out_dir']), argv, n)}")
    return 0


if __name__ == "__main__":
    main()
