import math
from fractions import Fraction

import pytest
import torch

from ebmgraph import sampling
from ebmgraph.sampling import (
    BULK_MIN_UNITS,
    SPLITMIX_MIN_WORDS,
    bernoulli,
    bernoulli_,
    uses_bulk_path,
)

ALL_DIGITS = torch.arange(2**16, dtype=torch.int32).to(torch.uint16)

FLOAT32_CASES = [0.0, 1.0, 0.5, 2.0**-17, 3e-6, 1e-30, 1e-45, 1 - 2.0**-24, 0.123456789, 0.99999, 1.5 / 2**16]
FLOAT64_CASES = [0.0, 1.0, 1e-300, 0.1, 1 - 2.0**-53, 2.0**-16 + 2.0**-60]


GAMMA = 0x9E3779B97F4A7C15


def splitmix64_reference(key: int, n_words: int) -> list[int]:
    """mix(key + i gamma) for i < n_words, in Python integers (unsigned 64-bit values)."""
    words = []
    for i in range(n_words):
        z = (key + i * GAMMA) % 2**64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        words.append(z ^ (z >> 31))
    return words


def as_signed(word: int) -> int:
    return word - 2**64 if word >= 2**63 else word


def exact_split(p: float) -> tuple[int, Fraction]:
    """floor(p 2^16) and frac(p 2^16) of the float p, in exact rational arithmetic."""
    scaled = Fraction(p) * 2**16
    whole = math.floor(scaled)
    return whole, scaled - whole


@pytest.mark.parametrize("dtype, p", [(torch.float32, p) for p in FLOAT32_CASES] + [(torch.float64, p) for p in FLOAT64_CASES])
def test_digit_comparison_exact_over_all_digits(dtype, p):
    probs = torch.full((2**16,), p, dtype=dtype)
    p = probs[0].item()  # the value after rounding to dtype
    whole, fraction = exact_split(p)

    units = sampling._compare_digits(probs, ALL_DIGITS, torch.empty_like(probs))

    # Over all 2^16 digits: floor(p 2^16) units are 1, one unit is a tie holding frac(p 2^16), the rest 0.
    # Hence P(1) = floor / 2^16 + frac / 2^16 = p exactly, given an exact draw at the tie.
    ties = units[(units > 0) & (units < 1)]
    assert int((units == 1).sum()) == whole
    assert ties.numel() == (1 if fraction else 0)
    if fraction:
        assert Fraction(ties.item()) == fraction
    assert int((units == 0).sum()) == 2**16 - whole - ties.numel()


def test_settle_ties_keeps_decided_units():
    generator = torch.Generator().manual_seed(0)
    decided = torch.bernoulli(torch.full((3000,), 0.5), generator=generator)
    units = decided.clone()
    units[::7] = 0.25

    sampling._settle_ties(units, torch.empty_like(units), generator)

    kept = torch.ones(3000, dtype=torch.bool)
    kept[::7] = False
    assert torch.equal(units[kept], decided[kept])
    assert set(units.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("size", [200_000, 200_000 + 300])
def test_settle_ties_draws_with_tie_probability(size):
    units = torch.full((size,), 0.3)

    sampling._settle_ties(units, torch.empty_like(units), torch.Generator().manual_seed(1))

    # Standard error of a mean of 2e5 Bernoulli(0.3) draws is 0.001; the tolerance is 5 of them.
    assert units.mean().item() == pytest.approx(0.3, abs=0.005)
    # The tail beyond the last full block of 512 units is settled too.
    assert set(units[-300:].unique().tolist()) <= {0.0, 1.0}


COLUMN_PROBS = [0.0, 1e-3, 0.1, 0.25, 0.5, 0.77, 0.999, 1.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [250_000, 101])
def test_bernoulli_column_frequencies(dtype, rows):
    probs = torch.tensor(COLUMN_PROBS, dtype=dtype).expand(rows, -1).contiguous()
    assert uses_bulk_path(probs) == (rows * len(COLUMN_PROBS) >= BULK_MIN_UNITS)

    units = bernoulli(probs, torch.Generator().manual_seed(2))

    frequencies = units.mean(dim=0).double()
    for p, frequency in zip(COLUMN_PROBS, frequencies.tolist(), strict=True):
        # Five standard errors of a mean of `rows` Bernoulli(p) draws; exact for p = 0 and p = 1.
        assert frequency == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / rows)), f"p={p}"


def test_bernoulli_adjacent_units_independent():
    # Four neighbouring units share one 64-bit word; their joint frequencies must factorise.
    rows = 100_000
    units = bernoulli(torch.full((rows, 4), 0.5), torch.Generator().manual_seed(3))

    both = (units[:, :-1] * units[:, 1:]).mean(dim=0)

    # Standard error of each joint frequency (p = 0.25) over 1e5 rows is 0.0014; the tolerance is 5 of them.
    torch.testing.assert_close(both, torch.full((3,), 0.25), rtol=0, atol=0.007)


@pytest.mark.parametrize("shape", [(300, 7, 11), (BULK_MIN_UNITS + 5,), (3, 4)])
def test_bernoulli_units_are_zero_or_one(shape):
    probs = torch.rand(shape, generator=torch.Generator().manual_seed(4))

    units = bernoulli(probs, torch.Generator().manual_seed(5))

    assert units.shape == probs.shape
    assert units.dtype == probs.dtype
    assert bool(((units == 0) | (units == 1)).all())
    assert not bool(torch.signbit(units).any()), "no unit may be -0.0"


def test_bernoulli_same_seed_same_units():
    probs = torch.rand(BULK_MIN_UNITS * 2, generator=torch.Generator().manual_seed(6))

    first = bernoulli(probs, torch.Generator().manual_seed(7))
    second = bernoulli(probs, torch.Generator().manual_seed(7))
    other = bernoulli(probs, torch.Generator().manual_seed(8))

    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_bernoulli_draws_only_from_given_generator():
    probs = torch.rand(BULK_MIN_UNITS * 2, generator=torch.Generator().manual_seed(9))
    global_state = torch.get_rng_state()

    bernoulli(probs, torch.Generator().manual_seed(10))

    assert torch.equal(torch.get_rng_state(), global_state)


def test_bernoulli_leaves_probs_unchanged():
    probs = torch.rand(BULK_MIN_UNITS * 2, generator=torch.Generator().manual_seed(11))
    copy = probs.clone()

    bernoulli(probs, torch.Generator().manual_seed(12))

    assert torch.equal(probs, copy)


def test_bernoulli_in_place_reuses_words():
    probs = torch.rand(BULK_MIN_UNITS * 2, generator=torch.Generator().manual_seed(13))
    # An oversized buffer is used in part, so the draws match those of a fresh one.
    words = sampling.bulk_words(probs.numel() * 3)

    with_words = bernoulli_(probs.clone(), torch.Generator().manual_seed(14), out=torch.empty_like(probs), words=words)
    without = bernoulli_(probs.clone(), torch.Generator().manual_seed(14), out=torch.empty_like(probs))

    assert torch.equal(with_words, without)


@pytest.mark.parametrize("size", [BULK_MIN_UNITS * 2, 10])
def test_bernoulli_nan_probability_gives_zero(size):
    probs = torch.full((size,), 0.5)
    probs[3] = float("nan")

    units = bernoulli(probs, torch.Generator().manual_seed(15))

    assert units[3].item() == 0.0


def test_bulk_path_only_for_large_cpu_float_tensors():
    assert uses_bulk_path(torch.empty(BULK_MIN_UNITS))
    assert uses_bulk_path(torch.empty(BULK_MIN_UNITS, dtype=torch.float64))
    assert not uses_bulk_path(torch.empty(BULK_MIN_UNITS - 1))
    assert not uses_bulk_path(torch.empty(BULK_MIN_UNITS, dtype=torch.float16))


def test_splitmix64_words_known_outputs():
    # SplitMix64 seeded with 1234567 (Rosetta Code, "Pseudo-random numbers/Splitmix64").
    expected = [0x599ED017FB08FC85, 0x2C73F08458540FA5, 0x883EBCE5A3F27C77, 0x3FBEF740E9177B3F, 0xE3B8346708CB5ECD]
    key = torch.tensor(as_signed((1234567 + GAMMA) % 2**64))

    words = sampling.splitmix64_words(key, SPLITMIX_MIN_WORDS, sampling.bulk_words(4 * SPLITMIX_MIN_WORDS))

    assert [w % 2**64 for w in words[:5].tolist()] == expected


@pytest.mark.parametrize("key", [0, 2**63 - 1, -(2**63), -123456789123456789])
def test_splitmix64_words_match_python_reference(key):
    # 37 words past a multiple of 16 also run the kernels' scalar tail loops.
    n_words = SPLITMIX_MIN_WORDS + 37

    words = sampling.splitmix64_words(torch.tensor(key), n_words, sampling.bulk_words(4 * n_words))

    assert [w % 2**64 for w in words.tolist()] == splitmix64_reference(key % 2**64, n_words)


def test_random_words_same_for_any_thread_count():
    threads = torch.get_num_threads()
    scratch = sampling.bulk_words(8 * SPLITMIX_MIN_WORDS)
    try:
        torch.set_num_threads(1)
        single = sampling.random_words(2 * SPLITMIX_MIN_WORDS, torch.Generator().manual_seed(16), scratch).clone()
        torch.set_num_threads(max(threads, 2))
        several = sampling.random_words(2 * SPLITMIX_MIN_WORDS, torch.Generator().manual_seed(16), scratch)
    finally:
        torch.set_num_threads(threads)

    assert torch.equal(single, several)


@pytest.mark.parametrize("n_words", [SPLITMIX_MIN_WORDS - 1, 4 * SPLITMIX_MIN_WORDS])
def test_random_words_bytes_uniform(n_words):
    generator = torch.Generator().manual_seed(17)
    scratch = sampling.bulk_words(4 * n_words)
    first = sampling.random_words(n_words, generator, scratch).clone()
    second = sampling.random_words(n_words, generator, scratch)
    assert not torch.equal(first, second), "each call must draw a new key"

    # Every byte position of the words, and the byte pairs across consecutive words, must be uniform.
    as_bytes = first.view(torch.uint8).view(n_words, 8).long()
    pairs = as_bytes[:-1, 7] * 16 // 256 * 16 + as_bytes[1:, 0] * 16 // 256
    for name, values, bins in [*((f"byte {b}", as_bytes[:, b], 256) for b in range(8)), ("pairs", pairs, 256)]:
        counts = torch.bincount(values, minlength=bins).double()
        expected = values.numel() / bins
        chi_square = float(((counts - expected) ** 2 / expected).sum())
        # Chi-square with 255 degrees of freedom: mean 255, standard deviation 22.6; the bound is 6 of them.
        assert chi_square < 255 + 6 * 22.6, f"{name}: chi-square {chi_square:.1f}"


def test_random_words_rejects_small_scratch():
    with pytest.raises(ValueError, match="scratch has room for 4 words, fewer than the 5 requested"):
        sampling.random_words(5, None, sampling.bulk_words(16))


def test_splitmix64_words_rejects_short_stream():
    with pytest.raises(ValueError, match="n_words must be between SPLITMIX_MIN_WORDS"):
        sampling.splitmix64_words(torch.tensor(0), 10, sampling.bulk_words(40))


@pytest.mark.parametrize(
    "layout",
    [
        lambda t: t.reshape(240, 300).t(),
        lambda t: t.reshape(24, 30, 100).permute(2, 0, 1),
        lambda t: t.reshape(12, 6, 20, 50).contiguous(memory_format=torch.channels_last),
        lambda t: t.reshape(240, 300)[:, ::2],
    ],
    ids=["transposed", "permuted", "channels-last", "strided"],
)
def test_bernoulli_any_layout_same_units(layout):
    probs = layout(torch.rand(72_000, generator=torch.Generator().manual_seed(18)))
    assert uses_bulk_path(probs)

    units = bernoulli(probs, torch.Generator().manual_seed(19))
    expected = bernoulli(probs.contiguous(), torch.Generator().manual_seed(19))

    assert units.shape == probs.shape
    assert torch.equal(units, expected)


@pytest.mark.parametrize("size", [BULK_MIN_UNITS * 2, 10])
def test_bernoulli_accepts_probs_requiring_grad(size):
    probs = torch.full((size,), 0.5, requires_grad=True)

    units = bernoulli(probs, torch.Generator().manual_seed(20))

    assert not units.requires_grad
    assert set(units.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_bernoulli_half_precision_small_probability(dtype):
    rows = 2_000_000
    probs = torch.full((rows,), 1e-3, dtype=dtype)
    p = probs[0].item()

    units = bernoulli(probs, torch.Generator().manual_seed(21))

    # Five standard errors of a mean of 2e6 Bernoulli(p) draws; float16 or bfloat16 uniforms are off by 60 or more.
    assert units.double().mean().item() == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / rows))
