import math
from fractions import Fraction

import pytest
import torch

from ebmgraph import sampling
from ebmgraph.sampling import BULK_MIN_UNITS, bernoulli, bernoulli_, uses_bulk_path

ALL_DIGITS = torch.arange(2**16, dtype=torch.int32).to(torch.uint16)

FLOAT32_CASES = [0.0, 1.0, 0.5, 2.0**-17, 3e-6, 1e-30, 1e-45, 1 - 2.0**-24, 0.123456789, 0.99999, 1.5 / 2**16]
FLOAT64_CASES = [0.0, 1.0, 1e-300, 0.1, 1 - 2.0**-53, 2.0**-16 + 2.0**-60]


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
