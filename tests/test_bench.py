"""The benchmark command on tiny sizes: it runs, and its records have the documented fields.

No test asserts a timing; the figures of a tiny run mean nothing.
"""

from __future__ import annotations

import json

import pytest
import torch

from ebmgraph.bench import harness, main
from ebmgraph.bench.context import TINY, Context, Runner
from ebmgraph.bench.harness import measure, paired_ratio, summarise
from ebmgraph.bench.tasks import build_tasks

RATE_FIELDS = {"name", "task", "variant", "quantity", "title", "unit", "median", "q1", "q3", "min", "max", "repeats", "environment"}
ENVIRONMENT_FIELDS = {"torch", "device", "dtype", "cpu", "cpu_count", "torch_threads", "clock", "quick", "tiny", "load_average_1_5_15_min"}


def read_records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def quick_tiny_records(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "records.jsonl"
    assert main(["--quick", "--tiny", "--no-memory", "--rounds", "2", "--round-seconds", "0.01", "--output", str(path)]) == 0
    return read_records(path)


def test_quick_run_covers_every_task(quick_tiny_records):
    expected = {task.name for task in build_tasks(Context(torch.device("cpu"), torch.float32, TINY))}
    assert {record["task"] for record in quick_tiny_records} == expected


def test_quick_run_times_engine_and_limits(quick_tiny_records):
    for task in {record["task"] for record in quick_tiny_records}:
        variants = {record["variant"] for record in quick_tiny_records if record["task"] == task and "median" in record}
        assert {"engine", "matmul", "bare"} <= variants, task


def test_rate_records_have_fields(quick_tiny_records):
    rates = [record for record in quick_tiny_records if record.get("quantity") == "rate"]
    assert rates
    for record in rates:
        assert RATE_FIELDS <= set(record), record["name"]
        assert ENVIRONMENT_FIELDS <= set(record["environment"]), record["name"]
        assert record["min"] <= record["q1"] <= record["median"] <= record["q3"] <= record["max"]
        assert record["repeats"] == len(record["rates"])
        assert record["name"] == f"{record['task']}/{record['variant']}"


def test_engine_records_carry_both_ratios(quick_tiny_records):
    for record in quick_tiny_records:
        if record["variant"] == "engine":
            assert record["ratio_to_matmul"] > 0, record["name"]
            assert record["ratio_to_bare"] > 0, record["name"]
            assert record["ratios"]["matmul"] == record["ratio_to_matmul"]


def test_skipped_variants_say_why(quick_tiny_records):
    thrml = [record for record in quick_tiny_records if record["variant"] == "thrml"]
    assert thrml and all("--quick" in record["skipped"] for record in thrml)
    for record in quick_tiny_records:
        assert ("median" in record) != ("skipped" in record), record["name"]


def test_memory_probe_records_peak(tmp_path, capsys):
    path = tmp_path / "memory.jsonl"
    arguments = ["--quick", "--tiny", "--tasks", "rbm_gibbs", "--variants", "engine,bare", "--rounds", "1"]
    assert main(arguments + ["--round-seconds", "0.01", "--output", str(path)]) == 0

    memory = {r["variant"]: r for r in read_records(path) if r["name"].endswith("/peak_memory")}
    assert set(memory) == {"engine", "bare"}
    for record in memory.values():
        assert record["unit"] == "MiB"
        assert record["median"] >= 0
        assert record["resident_before_mib"] > 0
    assert "rbm_gibbs" in capsys.readouterr().out


def test_unknown_task_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--tasks", "no_such_task"])
    assert "unknown task 'no_such_task'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--device", "bogus"], "--device 'bogus' is not a torch device"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--variants", "engine,no_such_variant"], "unknown variant 'no_such_variant'"),
    ],
)
def test_bad_option_is_rejected(options, message, capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", *options])
    assert message in capsys.readouterr().err


def test_output_folder_is_rejected_before_timing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--output", str(tmp_path)])
    assert "is a folder; pass a file name" in capsys.readouterr().err


def test_variant_of_one_task_runs_that_task_alone(tmp_path):
    # Of these two tasks only rbm_train_b4 has an sklearn variant (skipped, with a record, where sklearn is missing).
    path = tmp_path / "sklearn.jsonl"
    arguments = ["--quick", "--tiny", "--rounds", "1", "--round-seconds", "0.01", "--variants", "sklearn"]

    assert main([*arguments, "--tasks", "dbm_gibbs,rbm_train_b4", "--output", str(path)]) == 0

    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {record["task"] for record in records} == {"rbm_train_b4"}
    assert {record["variant"] for record in records} == {"sklearn"}


def test_capture_needs_cuda(capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--capture"])
    assert "--capture records CUDA graphs and needs --device cuda" in capsys.readouterr().err


def test_measure_interleaves_and_caps_rounds():
    order = []
    runners = {
        "a": Runner(lambda: order.append("a"), units_per_call=2.0),
        "b": Runner(lambda: order.append("b"), units_per_call=1.0, max_rounds=1),
    }

    rates = measure(runners, rounds=3, round_seconds=1e-9)

    assert len(rates["a"]) == 3
    assert len(rates["b"]) == 1
    # Two untimed calls each (warm-up, calibration), then rounds in rotated order: a b, then a, then a.
    assert order == ["a", "a", "b", "b", "a", "b", "a", "a"]


def test_measure_rests_before_each_timed_variant(monkeypatch):
    order = []
    monkeypatch.setattr(harness.time, "sleep", lambda seconds: order.append(f"rest {seconds}"))
    runners = {"a": Runner(lambda: order.append("a"), units_per_call=1.0), "b": Runner(lambda: order.append("b"), units_per_call=1.0)}

    measure(runners, rounds=2, round_seconds=1e-9, settle_seconds=0.3)

    # The untimed warm-up and calibration calls need no rest, but every timed call does.
    assert order == ["a", "a", "b", "b", "rest 0.3", "a", "rest 0.3", "b", "rest 0.3", "b", "rest 0.3", "a"]


def test_paired_ratio_uses_shared_rounds():
    rates = {"engine": [8.0, 9.0, 30.0], "bare": [10.0, 10.0]}
    assert paired_ratio(rates, "engine", "bare") == pytest.approx(0.85)
    assert paired_ratio(rates, "engine", "missing") is None


def test_summarise_quartiles():
    summary = summarise([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (summary["median"], summary["q1"], summary["q3"], summary["min"], summary["max"]) == (3.0, 2.0, 4.0, 1.0, 5.0)
