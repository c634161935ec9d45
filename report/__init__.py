"""The run report: `python launch/report.py dataset=... stage=...` writes `<out_dir>/report/` (docs/report.md)."""
