"""Peak working memory of one call of each variant.

On the CPU the probe runs in a fresh Python process (``python -m
ebmgraph.bench.memory SPEC``) so that memory freed by the timing run cannot be
reused unseen. It sets ``MALLOC_MMAP_THRESHOLD_`` so that glibc maps every
allocation above 64 KiB on its own and unmaps it on free: the resident set then
tracks the live tensors. For each variant it builds the runner, makes one
warm-up call, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``,
Linux 4.0 and later), makes one more call and reports the peak resident memory
above the level before that call. Model, data and whatever the warm-up call
keeps are therefore not counted; the figure is the working memory of a call.

On a GPU the probe runs in the benchmark's process with
``torch.cuda.max_memory_allocated``, which counts torch's allocations only.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Sequence

import torch

from ebmgraph.bench.context import FULL, TINY, Context, Runner, Unavailable

__all__ = ["probe_subprocess", "probe_cuda", "MIB"]

MIB = 2.0**20
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def probe_subprocess(ctx: Context, tiny: bool, pairs: Sequence[tuple[str, str]], timeout: float = 900.0) -> dict:
    """Probe ``(task, variant)`` pairs in a fresh process; return ``{(task, variant): result}``.

    A result has ``peak_mib`` and ``resident_mib``, or ``error`` with the reason.
    """
    spec = {
        "device": str(ctx.device),
        "dtype": str(ctx.dtype).removeprefix("torch."),
        "tiny": tiny,
        "quick": ctx.quick,
        "seed": ctx.seed,
        "pairs": [list(pair) for pair in pairs],
    }
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    command = [sys.executable, "-m", "ebmgraph.bench.memory", json.dumps(spec)]
    try:
        finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {tuple(pair): {"error": f"memory probe timed out after {timeout:.0f} s"} for pair in pairs}
    results = {}
    for line in finished.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            results[(record.pop("task"), record.pop("variant"))] = record
    for pair in pairs:
        if tuple(pair) not in results:
            reason = finished.stderr.strip().splitlines()[-1:] or [f"exit status {finished.returncode}"]
            results[tuple(pair)] = {"error": f"memory probe failed: {reason[0]}"}
    return results


def probe_cuda(runner: Runner) -> dict:
    """Peak torch allocation of one call above the allocation before it, on the current CUDA device."""
    runner.call()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    runner.call()
    torch.cuda.synchronize()
    return {"peak_mib": (torch.cuda.max_memory_allocated() - before) / MIB, "resident_mib": before / MIB}


def _status_kib(field: str) -> int:
    with open(_STATUS) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{_STATUS} has no {field} line")


def _probe_here(runner: Runner) -> dict:
    runner.call()
    gc.collect()
    before = _status_kib("VmRSS")
    with open(_CLEAR_REFS, "w") as clear:
        clear.write("5")
    runner.call()
    peak = _status_kib("VmHWM")
    return {"peak_mib": max(peak - before, 0) * 1024 / MIB, "resident_mib": before * 1024 / MIB}


def _main(spec: dict) -> None:
    from ebmgraph import kernels
    from ebmgraph.bench.tasks import build_tasks

    # The probe inherits EBMGRAPH_CPU_KERNELS, so it measures the sampler the timed run used.
    kernels.load_if_requested()

    ctx = Context(
        device=torch.device(spec["device"]),
        dtype=getattr(torch, spec["dtype"]),
        sizes=TINY if spec["tiny"] else FULL,
        quick=spec["quick"],
        seed=spec["seed"],
    )
    tasks = {task.name: task for task in build_tasks(ctx)}
    for task_name, variant in spec["pairs"]:
        record = {"task": task_name, "variant": variant}
        try:
            runner = tasks[task_name].variants[variant](ctx)
            record.update(_probe_here(runner))
        except Unavailable as error:
            record["error"] = str(error)
        except OSError as error:
            record["error"] = f"cannot read or reset the peak resident set size: {error}"
        print(json.dumps(record), flush=True)
        runner = None
        gc.collect()


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
