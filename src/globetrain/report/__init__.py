"""Results people and programs read: metrics files, the run summary, plots, the report.

- ``metrics``: JSON-lines metrics written as they happen (``MetricsWriter``), read back
  whole or incrementally (``read_metrics``, ``MetricsTail``); ``ROUND_FIELDS`` are the
  fields of a device's per-round line that the simulator's calibration reads.
- ``summary``: a fleet run's numbers from those lines (bytes per device against dense
  fp32 all-reduce, exchanges, compute fraction).
- ``plots``: accuracy and bytes over time, per-device compute against waiting (PNG).
- ``run_report``: the short human-readable report (Markdown), drawn from the files.
"""

from globetrain.report.metrics import ROUND_FIELDS, MetricsTail, MetricsWriter, read_metrics
from globetrain.report.summary import FleetTotals, dense_allreduce_bytes, summarize_fleet

__all__ = [
    "ROUND_FIELDS",
    "FleetTotals",
    "MetricsTail",
    "MetricsWriter",
    "dense_allreduce_bytes",
    "read_metrics",
    "summarize_fleet",
]
