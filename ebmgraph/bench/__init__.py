"""Benchmark of the engine against torch's own limits and other libraries.

Run ``python -m ebmgraph.bench`` (``--help`` lists the options). Every figure
is a rate (sweeps, mean-field iterations or training examples per second) with
its median and quartiles over interleaved rounds. Each comes with its ratio to
two limits measured in the same run: the same matrix products alone
("matmul") and a hand-written bare-torch implementation ("bare"). Peak working
memory is probed per variant. :mod:`ebmgraph.bench.tasks` defines the tasks.
"""

from ebmgraph.bench.cli import main, run_benchmark

__all__ = ["main", "run_benchmark"]
