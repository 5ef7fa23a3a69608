"""Run every example script in its quick mode and check what it prints."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST files not found in {MNIST_DIR}")
MNIST_OPTIONS = ["--data", str(MNIST_DIR), "--no-download"]


def run_example(name: str, *options: str, cwd: Path) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--quick", *options],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def number_after(label: str, text: str) -> float:
    match = re.search(re.escape(label) + r"\s*(-?[0-9.]+)", text)
    assert match, f"{label!r} not found in:\n{text}"
    return float(match.group(1))


def test_every_example_is_tested():
    tested = {"quickstart.py", "custom_graph.py", "dbm_likelihood.py", "drm_mnist.py", "compare_families.py"}
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


def test_quickstart_gibbs_close_to_exact(tmp_path):
    output = run_example("quickstart.py", cwd=tmp_path)
    # 20,000 chains: the sampling error of the distance is at most about 0.02 over the 48 joint states.
    assert number_after("marginal =", output) < 0.05


def test_custom_graph_learns(tmp_path):
    output = run_example("custom_graph.py", cwd=tmp_path)
    untrained = number_after("held-out log-likelihood, untrained:", output)
    trained = number_after("held-out log-likelihood, trained:", output)
    truth = number_after("true data distribution:", output)
    # Seed 0 measured -5.22 untrained and -3.55 after 5 epochs; nothing can exceed the truth by more than sampling noise.
    assert trained > untrained + 1.0
    assert trained < truth + 0.1
    assert "{label, h_image} -> {joint} -> {image}" in output
    assert number_after("argmax E[label | image]:", output) > 0.6


def test_dbm_likelihood_improves(tmp_path):
    output = run_example("dbm_likelihood.py", cwd=tmp_path)
    untrained = number_after("untrained:  log Z = ", output)
    # Zero biases and weights of standard deviation 0.01: log Z is close to (16 + 12 + 6) log 2.
    assert untrained == pytest.approx(34 * math.log(2), abs=0.5)
    values = re.findall(r"average log p\(v\) of the 30 images = (-?[0-9.]+)", output)
    first, _, last = (float(value) for value in values)
    # Seed 0 measured -11.09 untrained and -6.91 trained; the optimum is -log 30 = -3.40.
    assert last > first + 2.0
    assert last < -3.40
    exact_log_z = float(re.findall(r"trained:    log Z = (-?[0-9.]+)", output)[-1])
    # Seed 0 measured 67.61 by AIS (500 temperatures, 100 runs) against the exact 67.70.
    assert number_after("100 runs): log Z = ", output) == pytest.approx(exact_log_z, abs=0.5)


@needs_mnist
def test_drm_mnist_classifies_and_generates(tmp_path):
    output = run_example("drm_mnist.py", *MNIST_OPTIONS, "--output", str(tmp_path / "out"), cwd=tmp_path)
    # Chance is 90 %; seed 0 measured 39.5 % in quick mode.
    assert number_after("on 1000 test images:", output) < 70
    assert (tmp_path / "out" / "drm-generated.png").is_file()
    assert (tmp_path / "out" / "drm-label-means.png").is_file()
    assert re.search(r"labels \d+ of 10 correctly", output)


@needs_mnist
def test_compare_families_prints_each(tmp_path):
    output = run_example("compare_families.py", *MNIST_OPTIONS, "--families", "dbn", "fine-dbn", "drm", cwd=tmp_path)
    for family in ("dbn", "fine-dbn", "drm"):
        assert re.search(rf"^\s*{family}\s+[0-9.]+%\s+[0-9.]+%", output, flags=re.MULTILINE), output
