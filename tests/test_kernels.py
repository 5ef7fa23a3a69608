import logging

import pytest
import torch

from ebmgraph import kernels, rbm
from ebmgraph.sampling import BULK_MIN_UNITS, SPLITMIX_MIN_WORDS, bernoulli, needs_word_scratch

# Enough units for the SplitMix64 path, with a partial last tie block of 37 units.
BULK_UNITS = 4 * SPLITMIX_MIN_WORDS + 512 * 3 + 37


@pytest.fixture
def kernel():
    """Load the compiled kernel for one test (the first load compiles it), or skip where it cannot be built."""
    kernels.unload_cpu_kernels()
    if not kernels.load_cpu_kernels():
        pytest.skip("the CPU kernel is not available here (no AVX-512, compiler or ninja)")
    yield kernels.loaded_kernel()
    kernels.unload_cpu_kernels()


def probabilities(dtype: torch.dtype) -> torch.Tensor:
    probs = torch.rand(BULK_UNITS, dtype=dtype, generator=torch.Generator().manual_seed(1))
    probs[::101] = 0.0
    probs[1::103] = 1.0
    # Multiples of 2**-16 and their neighbours make ties and near-ties.
    probs[2::107] = torch.arange(probs[2::107].numel(), dtype=dtype) % 65_536 / 65_536
    probs[3::109] = 0.5 + 2.0**-20
    return probs


def draw_twice(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Units with and without the kernel from one seed, and the generator's next output after the first."""
    generator = torch.Generator().manual_seed(2)
    with_kernel = bernoulli(probs, generator)
    after = torch.rand(3, generator=generator)

    loaded = kernels.loaded_kernel()
    kernels.unload_cpu_kernels()
    try:
        generator = torch.Generator().manual_seed(2)
        without_kernel = bernoulli(probs, generator)
        assert torch.equal(torch.rand(3, generator=generator), after), "the two paths consumed the generator differently"
    finally:
        kernels._loaded = loaded
    return with_kernel, without_kernel, after


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_units_equal_torch_path(kernel, dtype):
    probs = probabilities(dtype)

    with_kernel, without_kernel, _ = draw_twice(probs)

    assert torch.equal(with_kernel, without_kernel)
    assert with_kernel.dtype == dtype


def test_kernel_units_equal_in_two_dimensions(kernel):
    probs = probabilities(torch.float32)[: 300 * 220].reshape(300, 220)

    with_kernel, without_kernel, _ = draw_twice(probs)

    assert with_kernel.shape == (300, 220)
    assert torch.equal(with_kernel, without_kernel)


def test_kernel_units_independent_of_threads(kernel):
    probs = probabilities(torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single_thread = bernoulli(probs, torch.Generator().manual_seed(7))
        torch.set_num_threads(2)
        two_threads = bernoulli(probs, torch.Generator().manual_seed(7))
    finally:
        torch.set_num_threads(threads)

    assert torch.equal(single_thread, two_threads)


def test_kernel_frequencies_match_probabilities(kernel):
    probs = torch.tensor([0.0, 1e-3, 0.3, 0.5 + 2.0**-20, 0.999, 1.0]).repeat(50_000)

    units = bernoulli(probs, torch.Generator().manual_seed(3)).view(-1, 6)

    frequencies = units.mean(dim=0)
    # Five standard errors of a mean of 50,000 draws at p = 0.5 is 0.011, and p = 0 and p = 1 are exact.
    torch.testing.assert_close(frequencies, probs[:6], rtol=0, atol=0.011)
    assert frequencies[0] == 0.0
    assert frequencies[5] == 1.0


def test_kernel_gibbs_equals_torch_path(kernel):
    model = rbm(300, 250, generator=torch.Generator().manual_seed(4))
    schedule = model.schedule()
    start = {"v": bernoulli(torch.full((400, 300), 0.3), torch.Generator().manual_seed(5))}

    with torch.no_grad():
        with_kernel = schedule.gibbs(dict(start), 3, generator=torch.Generator().manual_seed(6))
        kernels.unload_cpu_kernels()
        without_kernel = schedule.gibbs(dict(start), 3, generator=torch.Generator().manual_seed(6))

    for layer in ("v", "h"):
        assert torch.equal(with_kernel[layer], without_kernel[layer]), layer


def test_kernel_draws_need_no_word_scratch(kernel):
    large = torch.empty(4 * SPLITMIX_MIN_WORDS)
    medium = torch.empty(BULK_MIN_UNITS)

    assert not needs_word_scratch(large)
    assert needs_word_scratch(medium), "below SPLITMIX_MIN_WORDS words the torch path makes the words"
    kernels.unload_cpu_kernels()
    assert needs_word_scratch(large)


def test_load_declines_without_avx512(monkeypatch, caplog):
    kernels.unload_cpu_kernels()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")

    with caplog.at_level(logging.WARNING, logger="ebmgraph.kernels"):
        assert not kernels.load_cpu_kernels()

    assert kernels.loaded_kernel() is None
    assert "needs AVX-512 and torch reports AVX2" in caplog.text


def test_load_reports_failed_build(monkeypatch, caplog):
    def failing_load(**_):
        raise RuntimeError("Error building extension\n[1/2] c++ -O3 ...\nFAILED: bernoulli_digits.o")

    kernels.unload_cpu_kernels()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.utils.cpp_extension, "load", failing_load)

    with caplog.at_level(logging.WARNING, logger="ebmgraph.kernels"):
        assert not kernels.load_cpu_kernels()

    assert kernels.loaded_kernel() is None
    assert "building ebmgraph's CPU kernel failed (Error building extension);" in caplog.text
    assert "FAILED" not in caplog.text, "only the first line of the build log belongs in the warning"


def test_load_if_requested_reads_environment(monkeypatch):
    kernels.unload_cpu_kernels()
    calls = []
    monkeypatch.setattr(kernels, "load_cpu_kernels", lambda: calls.append("load") or False)

    monkeypatch.setenv(kernels.ENVIRONMENT_VARIABLE, "0")
    assert not kernels.load_if_requested()
    monkeypatch.setenv(kernels.ENVIRONMENT_VARIABLE, "1")
    assert not kernels.load_if_requested()
    assert calls == ["load"]

    monkeypatch.setenv(kernels.ENVIRONMENT_VARIABLE, "yes")
    with pytest.raises(ValueError, match="EBMGRAPH_CPU_KERNELS must be 0 or 1, got 'yes'"):
        kernels.load_if_requested()
