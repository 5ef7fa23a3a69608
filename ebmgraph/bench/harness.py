"""Timing and summaries of the benchmark.

The variants of one task are timed in interleaved rounds: every round times
each variant once, in an order rotated from round to round, so that a change
in machine load hits all variants alike. A ratio between two variants is the
median over rounds of their rates in the same round, which cancels most of that
drift. Each variant first makes one untimed warm-up call (compilation, caches,
first-touch allocation) and one timed call that sets how many calls make a
round of about ``round_seconds``.

Before each variant's calls the harness sleeps ``settle_seconds``, so that the
worker threads of the previous variant go idle. On the 2-core development
machine the first 0.1 s of PyTorch calls after a scikit-learn fit ran at half
speed, which slowed whichever variant came next. The likely cause, not
confirmed, is that NumPy's OpenBLAS threads keep polling for work for a while
after a call returns.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

from ebmgraph.bench.context import Runner

__all__ = ["CLOCKS", "measure", "summarise", "paired_ratio"]

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
"""``wall`` is elapsed time. ``process`` is CPU time of this process (all its
threads), which a busy machine disturbs less; it is meaningless for GPU work."""


def measure(
    runners: Mapping[str, Runner],
    *,
    rounds: int,
    round_seconds: float,
    clock: str = "wall",
    synchronize: Callable[[], None] = lambda: None,
    settle_seconds: float = 0.0,
) -> dict[str, list[float]]:
    """Time every runner in ``rounds`` interleaved rounds and return its rates (units per second) per round.

    A runner with ``max_rounds`` takes part in that many rounds only. Its list is
    then shorter, and its rates belong to rounds 0, 1, ... in order.
    """
    now = CLOCKS[clock]
    calls = {name: _calls_per_round(runner, round_seconds, now, synchronize) for name, runner in runners.items()}
    rates: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for round_index in range(rounds):
        shift = round_index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            runner = runners[name]
            if runner.max_rounds is not None and round_index >= runner.max_rounds:
                continue
            time.sleep(settle_seconds)
            elapsed = _time_calls(runner, calls[name], now, synchronize)
            rates[name].append(runner.units_per_call * calls[name] / elapsed)
    return rates


def _calls_per_round(runner: Runner, round_seconds: float, now, synchronize) -> int:
    runner.call()
    synchronize()
    one = _time_calls(runner, 1, now, synchronize)
    return max(1, round(round_seconds / one))


def _time_calls(runner: Runner, calls: int, now, synchronize) -> float:
    synchronize()
    start = now()
    for _ in range(calls):
        runner.call()
    synchronize()
    # A process clock ticks in steps of a few milliseconds at worst; never divide by zero.
    return max(now() - start, 1e-9)


def summarise(values: list[float]) -> dict[str, float]:
    """Median, quartiles (inclusive method), minimum and maximum of ``values``."""
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "min": min(values),
        "max": max(values),
        "repeats": len(values),
    }


def paired_ratio(rates: Mapping[str, list[float]], numerator: str, denominator: str) -> float | None:
    """Return the median over shared rounds of ``rate[numerator] / rate[denominator]``, or None without one."""
    # A variant capped by max_rounds has fewer rates; zip pairs the rounds both took part in.
    pairs = list(zip(rates.get(numerator, []), rates.get(denominator, []), strict=False))
    if not pairs:
        return None
    return statistics.median(a / b for a, b in pairs)
