"""The ``python -m ebmgraph.bench`` command: run the tasks, print the table, write JSON lines."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ebmgraph import kernels
from ebmgraph.bench import memory
from ebmgraph.bench.context import FULL, TINY, Context, Unavailable
from ebmgraph.bench.harness import CLOCKS, measure
from ebmgraph.bench.report import (
    environment,
    format_table,
    memory_records,
    rate_records,
    skip_records,
)
from ebmgraph.bench.tasks import Task, build_tasks

__all__ = ["main", "run_benchmark", "build_parser"]

logger = logging.getLogger(__name__)

# (rounds, seconds per round, seconds of rest before each variant's calls) of a full and of a quick run.
FULL_TIMING = (7, 0.5, 0.25)
QUICK_TIMING = (3, 0.1, 0.02)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ebmgraph.bench",
        description=(
            "Measure block-Gibbs, mean-field and training rates of the engine against the same matrix "
            "products alone (matmul), a hand-written bare-torch loop (bare) and other installed libraries."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="3 short rounds per task and no THRML; finishes in about a minute")
    parser.add_argument("--tiny", action="store_true", help="tiny layer and batch sizes, to check that everything runs")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="parameter dtype (default float32)")
    parser.add_argument("--output", default="ebmgraph-bench.jsonl", help="JSON-lines file to write, or - for standard output")
    parser.add_argument("--tasks", help="comma-separated task names to run (default: all); see the table for names")
    parser.add_argument("--variants", help="comma-separated variants to run, e.g. engine,matmul,bare (default: all)")
    parser.add_argument("--rounds", type=int, help="timed rounds per task (default 7, or 3 with --quick)")
    parser.add_argument("--round-seconds", type=float, help="target seconds per variant and round (default 0.5, or 0.1 with --quick)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall time (default) or CPU time of the process")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own setting)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--capture", action="store_true", help="also time the engine's CUDA-graph path (CUDA only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, weights and draws")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from command-line arguments; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output != "-" and Path(args.output).is_dir():
        parser.error(f"--output {args.output} is a folder; pass a file name such as {Path(args.output) / 'ebmgraph-bench.jsonl'}")
    try:
        records = run_benchmark(args)
    except ValueError as error:
        parser.error(str(error))
    print(format_table(records))
    _write(records, args.output)
    return 0


def run_benchmark(args: argparse.Namespace) -> list[dict]:
    """Run every selected task and return its records (rates, memory, skipped variants) in table order."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    ctx = _context(args)
    rounds, round_seconds, settle_seconds = QUICK_TIMING if args.quick else FULL_TIMING
    rounds = args.rounds if args.rounds is not None else rounds
    round_seconds = args.round_seconds if args.round_seconds is not None else round_seconds
    if rounds < 1 or round_seconds <= 0:
        raise ValueError(f"--rounds must be at least 1 and --round-seconds positive, got {rounds} and {round_seconds}")
    synchronize = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    shared = environment(ctx.device, dtype=ctx.dtype, clock=args.clock, quick=args.quick, tiny=args.tiny)
    shared["settle_seconds"] = settle_seconds
    shared["cpu_kernel"] = kernels.load_if_requested()

    tasks = _select(build_tasks(ctx), args.tasks, args.variants)
    records, probed = [], {}
    for task in tasks:
        logger.info("timing %s", task.name)
        runners, skipped = _runners(task, ctx)
        rates = measure(
            runners,
            rounds=rounds,
            round_seconds=round_seconds,
            clock=args.clock,
            synchronize=synchronize,
            settle_seconds=settle_seconds,
        )
        devices = {name: runner.device for name, runner in runners.items() if runner.device is not None}
        if ctx.device.type == "cuda" and not args.no_memory:
            probed[task.name] = {name: memory.probe_cuda(runner) for name, runner in runners.items()}
        records += rate_records(task, rates, devices, shared) + skip_records(task, skipped, shared)
        probed.setdefault(task.name, {name: None for name in runners})
        runners.clear()

    if not args.no_memory:
        _add_memory(records, tasks, probed, ctx, args.tiny, shared)
    return records


def _context(args: argparse.Namespace) -> Context:
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available in this torch build or machine")
    if args.capture and device.type != "cuda":
        raise ValueError("--capture records CUDA graphs and needs --device cuda")
    return Context(
        device=device,
        dtype=getattr(torch, args.dtype),
        sizes=TINY if args.tiny else FULL,
        quick=args.quick,
        seed=args.seed,
        capture=args.capture,
    )


def _select(tasks: list[Task], names: str | None, variants: str | None) -> list[Task]:
    if names:
        requested = [name.strip() for name in names.split(",") if name.strip()]
        known = {task.name for task in tasks}
        unknown = [name for name in requested if name not in known]
        if unknown:
            raise ValueError(f"--tasks names unknown task {unknown[0]!r}; tasks are {sorted(known)}")
        tasks = [task for task in tasks if task.name in requested]
    if variants:
        keep = {name.strip() for name in variants.split(",") if name.strip()}
        known = {variant for task in tasks for variant in task.variants}
        unknown = sorted(keep - known)
        if unknown:
            raise ValueError(f"--variants names unknown variant {unknown[0]!r}; the selected tasks have {sorted(known)}")
        tasks = [Task(t.name, t.title, t.unit, {k: v for k, v in t.variants.items() if k in keep}, t.shape) for t in tasks]
        # A task none of whose variants was selected has nothing to time.
        tasks = [task for task in tasks if task.variants]
    return tasks


def _runners(task: Task, ctx: Context):
    runners, skipped = {}, {}
    for name, factory in task.variants.items():
        try:
            runners[name] = factory(ctx)
        except Unavailable as error:
            skipped[name] = str(error)
    return runners, skipped


def _add_memory(records: list[dict], tasks: list[Task], probed: dict, ctx: Context, tiny: bool, shared: dict) -> None:
    """Probe the variants not yet probed (all of them on the CPU) and insert the records after each task's rates."""
    pending = [(task, variant) for task in tasks for variant, result in probed[task.name].items() if result is None]
    if pending:
        results = memory.probe_subprocess(ctx, tiny, [(task.name, variant) for task, variant in pending])
        for task, variant in pending:
            probed[task.name][variant] = results[(task.name, variant)]
    for task in tasks:
        position = max(i for i, record in enumerate(records) if record["task"] == task.name) + 1
        records[position:position] = memory_records(task, probed[task.name], shared)


def _write(records: list[dict], output: str) -> None:
    lines = "".join(json.dumps(record) + "\n" for record in records)
    if output == "-":
        sys.stdout.write(lines)
        return
    with open(output, "w") as file:
        file.write(lines)
    print(f"\nwrote {len(records)} records to {output}")
