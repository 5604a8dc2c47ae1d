"""Reports: planner sweeps as tables (CSV, markdown) and PNG plots."""

from inferline.reports._sweep import SweepPoint, markdown_table, run_sweep, write_sweep

__all__ = ["SweepPoint", "markdown_table", "run_sweep", "write_sweep"]
