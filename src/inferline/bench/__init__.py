"""The benchmarks behind ``inferline bench`` (SPEC §4), apart from the library.

One module per benchmark: :mod:`~inferline.bench.estimator`, :mod:`~inferline.bench.planner`,
:mod:`~inferline.bench.engine`, :mod:`~inferline.bench.replica_start`,
:mod:`~inferline.bench.tuner`, :mod:`~inferline.bench.ray`, and for the network-facing
engine :mod:`~inferline.bench.fuzz` (malformed requests), :mod:`~inferline.bench.wire`
(JSON against binary tensors) and :mod:`~inferline.bench.overload` (goodput), and
:mod:`~inferline.bench.promise` (do served plans keep the SLO the Planner promised?).
Each has a ``run_*`` function that returns JSON-ready figures (a dict) and one
``tables(figures)`` renderer that draws the readable output from that same dict. Nothing
in the library imports this package; only the command line and the tests do. A benchmark
writes files only into the folder it is given (``out_dir``), never into the checkout by
default.
:mod:`~inferline.bench.simpy_model` is the plain SimPy peer of the Estimator that the
estimator benchmark and the tests compare it with.
"""
