"""Workloads: arrival traces, their generators, real-trace loading and reshaping (SPEC §2.4).

A :class:`Trace` is a sorted array of arrival times in seconds, optionally with
the path (visited stages) each query took. Generators build synthetic traces;
real request logs are loaded with :func:`load_timestamp_csv`, rescaled to the
rate an experiment needs, and split into a planning and an evaluation part.

**Burstiness convention:** ``cv`` is σ/μ of the inter-arrival gaps. The
InferLine paper's "CV" is the squared value σ²/μ², so paper CV = 4 is
``cv=2`` here. See docs/traces.md.
"""

from inferline.workload._generators import Segment, gamma_trace, piecewise_trace, ramp_trace
from inferline.workload._io import bundled_trace_path, load_timestamp_csv, load_trace, save_trace
from inferline.workload._trace import Trace
from inferline.workload._transform import (
    peak_rate_qps,
    rescale_to_mean_rate,
    rescale_to_peak_rate,
    split_trace,
)

__all__ = [
    "Segment",
    "Trace",
    "bundled_trace_path",
    "gamma_trace",
    "load_timestamp_csv",
    "load_trace",
    "peak_rate_qps",
    "piecewise_trace",
    "ramp_trace",
    "rescale_to_mean_rate",
    "rescale_to_peak_rate",
    "save_trace",
    "split_trace",
]
