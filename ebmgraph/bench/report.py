"""Records (JSON lines) and the printed table of the benchmark."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping

import torch

from ebmgraph.bench.external import library_versions
from ebmgraph.bench.harness import paired_ratio, summarise
from ebmgraph.bench.tasks import Task

__all__ = ["environment", "rate_records", "memory_records", "skip_records", "format_table", "LIMITS"]

LIMITS = ("matmul", "bare")
"""The variants every other variant's rate is divided by, in the ``ratio_to_*`` fields."""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device, *, dtype: torch.dtype, clock: str, quick: bool, tiny: bool) -> dict:
    """Machine, software and conditions shared by every record of a run."""
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "load_average_1_5_15_min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "clock": clock,
        "quick": quick,
        "tiny": tiny,
        "libraries": library_versions(),
    }
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
    return record


def rate_records(task: Task, rates: Mapping[str, list[float]], devices: Mapping[str, str], shared: dict) -> list[dict]:
    """Build one record per measured variant of ``task``, with its ratios to the limits and to every other variant."""
    records = []
    for variant, values in rates.items():
        record = {
            "name": f"{task.name}/{variant}",
            "task": task.name,
            "variant": variant,
            "quantity": "rate",
            "title": task.title,
            "unit": task.unit,
            **summarise(values),
            "rates": values,
        }
        for limit in LIMITS:
            if limit != variant and limit in rates:
                record[f"ratio_to_{limit}"] = paired_ratio(rates, variant, limit)
        record["ratios"] = {other: paired_ratio(rates, variant, other) for other in rates if other != variant}
        record["variant_device"] = devices.get(variant, shared["device"])
        record["shape"] = task.shape
        record["environment"] = shared
        records.append(record)
    return records


def memory_records(task: Task, results: Mapping[str, dict], shared: dict) -> list[dict]:
    """Build one record per probed variant: peak working memory of one call in MiB, or why it is missing."""
    records = []
    for variant, result in results.items():
        record = {"name": f"{task.name}/{variant}/peak_memory", "task": task.name, "variant": variant}
        if "error" in result:
            record["skipped"] = result["error"]
        else:
            peak = result["peak_mib"]
            record.update(quantity="peak_memory", title=task.title, unit="MiB")
            record.update(median=peak, q1=peak, q3=peak, min=peak, max=peak, repeats=1)
            record["resident_before_mib"] = result["resident_mib"]
            bare = results.get("bare", {}).get("peak_mib")
            if variant != "bare" and bare:
                record["ratio_to_bare"] = peak / bare
        record["shape"] = task.shape
        record["environment"] = shared
        records.append(record)
    return records


def skip_records(task: Task, skipped: Mapping[str, str], shared: dict) -> list[dict]:
    """Build one record per variant that did not run, with the reason."""
    return [
        {"name": f"{task.name}/{variant}", "task": task.name, "variant": variant, "skipped": reason, "environment": shared}
        for variant, reason in skipped.items()
    ]


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def format_table(records: list[dict]) -> str:
    """Format the table printed at the end of a run: one block per task, one line per variant."""
    memory = {(r["task"], r["variant"]): r for r in records if r["name"].endswith("/peak_memory")}
    header = f"{'variant':<11} {'median':>10} {'IQR':>21} {'unit':<13} {'÷matmul':>8} {'÷bare':>6} {'peak MiB':>9}"
    lines = []
    current = None
    for record in records:
        if record["name"].endswith("/peak_memory"):
            continue
        if record["task"] != current:
            current = record["task"]
            title = record.get("title") or next((r.get("title") for r in records if r["task"] == current and r.get("title")), "")
            lines += ["", f"{current}: {title}", header]
        if "skipped" in record:
            lines.append(f"{record['variant']:<11} skipped: {record['skipped']}")
            continue
        peak = memory.get((record["task"], record["variant"]), {})
        peak_text = "-" if "median" not in peak else f"{peak['median']:.1f}"
        spread = f"{_number(record['q1'])}-{_number(record['q3'])}"
        lines.append(
            f"{record['variant']:<11} {_number(record['median']):>10} {spread:>21} {record['unit']:<13} "
            f"{_number(record.get('ratio_to_matmul'), 3):>8} {_number(record.get('ratio_to_bare'), 3):>6} {peak_text:>9}"
        )
    return "\n".join(lines)
