"""Exact Bernoulli draws that cost less random-number generation than ``torch.rand``.

On the CPU ``torch.rand`` spends one Mersenne-Twister output (32 bits) and a
conversion on every float. In a bare-torch block-Gibbs sweep over 1,000 chains
of an RBM 784-500 the draws took about 3.6 of 24 ms on one core of a 2-core AMD
EPYC machine. :func:`bernoulli_` draws 16 random bits per unit instead, four
units per 64-bit word. It settles the rare units that 16 bits cannot decide with
a second uniform draw, so every unit is still exactly Bernoulli(p):

* Let ``k`` be the unit's 16-bit digit, uniform on ``{0, ..., 2**16 - 1}``, and
  ``d = p - k * 2**-16``.
* If ``d >= 2**-16`` the unit is 1, and if ``d <= 0`` it is 0. Otherwise (a
  *tie*: ``k = floor(p * 2**16)``, probability at most ``2**-16`` per unit) it is
  1 with probability ``r = d * 2**16``, drawn with ``torch.rand``.

So ``P(unit = 1) = floor(p * 2**16) / 2**16 + 2**-16 * P(u < r)``, which is ``p``
up to the resolution of the tie draw. The error is below ``2**-40`` in float32
and ``2**-69`` in float64, finer than ``torch.rand(...) < p`` (``2**-24`` in
float32). In float32 and float64 the subtraction ``d`` is exact at every tie,
because there ``p`` and ``k * 2**-16`` are within a factor of two (Sterbenz's
lemma) or ``k`` is 0. Elsewhere it is correctly rounded, so the three cases are
decided without rounding error.

CUDA tensors, other dtypes and tensors of fewer than :data:`BULK_MIN_UNITS` units
use ``torch.rand`` and a comparison: the device generator is cheap there, and the
bulk path's extra operations would cost more than they save.
"""

from __future__ import annotations

import torch

__all__ = ["bernoulli", "bernoulli_", "bulk_words", "BULK_MIN_UNITS", "DIGIT_BITS"]

DIGIT_BITS = 16
"""Random bits per unit on the bulk path."""

BULK_MIN_UNITS = 12_000
"""Smallest tensor (in units) that takes the bulk path on the CPU.

Near this size both paths took about 50 microseconds on one core of a 2-core
AMD EPYC machine (shared with other jobs). Below it the bulk path's fixed cost of
about ten operations dominates.
"""

_DIGIT_SCALE = 2.0**-DIGIT_BITS
_DIGITS_PER_WORD = 64 // DIGIT_BITS
# Width of the row blocks in which ties are searched; a tie costs one draw per unit of its block.
_TIE_BLOCK = 512


def bulk_words(n_units: int, device=None) -> torch.Tensor:
    """Allocate the int64 scratch that :func:`bernoulli_` fills with random bits for ``n_units`` units."""
    return torch.empty((n_units + _DIGITS_PER_WORD - 1) // _DIGITS_PER_WORD, dtype=torch.int64, device=device)


def uses_bulk_path(probs: torch.Tensor) -> bool:
    """Return True if :func:`bernoulli_` takes the 16-bit bulk path for a tensor like ``probs``."""
    return (
        probs.device.type == "cpu"
        and probs.dtype in (torch.float32, torch.float64)
        and probs.numel() >= BULK_MIN_UNITS
    )


def bernoulli(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a tensor of independent Bernoulli(``probs``) units, each 0.0 or 1.0 in ``probs.dtype``.

    Parameters
    ----------
    probs : Tensor, any shape
        Probabilities in ``[0, 1]`` (not checked). It is left unchanged.
    generator : torch.Generator, optional
        Source of every random draw.
    """
    return bernoulli_(probs.clone(), generator, out=torch.empty_like(probs))


def bernoulli_(
    probs: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    out: torch.Tensor,
    words: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw Bernoulli(``probs``) units into ``out``; ``probs`` is overwritten (used as scratch).

    Parameters
    ----------
    probs : Tensor, any shape, contiguous
        Probabilities in ``[0, 1]`` (not checked). Its values are lost.
    generator : torch.Generator, optional
        Source of every random draw.
    out : Tensor, shape and dtype of ``probs``, contiguous
        Receives the units, 0.0 or 1.0. It must not share memory with ``probs``.
    words : Tensor, int64, optional
        Scratch from :func:`bulk_words` for at least ``probs.numel()`` units, reused
        between calls to save an allocation.

    Returns
    -------
    Tensor
        ``out``.
    """
    if not uses_bulk_path(probs):
        uniform = torch.rand(probs.shape, dtype=probs.dtype, device=probs.device, generator=generator)
        return out.copy_(torch.lt(uniform, probs))

    n_units = probs.numel()
    n_words = (n_units + _DIGITS_PER_WORD - 1) // _DIGITS_PER_WORD
    if words is None or words.numel() < n_words:
        words = bulk_words(n_units)
    words = words[:n_words]
    # Full 64-bit range: random_() without bounds leaves the sign bit at zero.
    words.random_(-(2**63), None, generator=generator)
    digits = words.view(torch.uint16)[:n_units].view(probs.shape)
    _compare_digits(probs, digits, out)
    _settle_ties(out, probs, generator)
    return out


def _compare_digits(probs: torch.Tensor, digits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out <- clamp((p - k 2**-16) 2**16, 0, 1)``: 1 or 0 where the digit ``k`` decides, ``r`` at a tie."""
    out.copy_(digits)
    torch.sub(probs, out, alpha=_DIGIT_SCALE, out=out)
    return out.clamp_(0.0, _DIGIT_SCALE).mul_(1.0 / _DIGIT_SCALE)


def _settle_ties(units: torch.Tensor, scratch: torch.Tensor, generator: torch.Generator | None) -> None:
    """Replace every value strictly between 0 and 1 in ``units`` by a Bernoulli draw with that probability.

    Ties are found block by block: ``frac`` is zero exactly on 0 and 1, so a block
    with a positive maximum of ``frac`` holds a tie. Each such block is redrawn
    whole as ``rand < value``, which keeps the decided units (``rand < 0`` is
    false, ``rand < 1`` true) and draws the ties.
    """
    flat = units.view(-1)
    fractions = torch.frac(units, out=scratch).view(-1)
    n_full = flat.numel() // _TIE_BLOCK * _TIE_BLOCK
    if n_full:
        blocks = flat[:n_full].view(-1, _TIE_BLOCK)
        tied = fractions[:n_full].view(-1, _TIE_BLOCK).amax(dim=1).nonzero().squeeze(1)
        if tied.numel():
            values = blocks[tied]
            uniform = torch.rand(values.shape, dtype=values.dtype, generator=generator)
            blocks[tied] = torch.lt(uniform, values).to(values.dtype)
    if n_full < flat.numel():
        tail = flat[n_full:]
        if bool(fractions[n_full:].amax() != 0):
            uniform = torch.rand(tail.shape, dtype=tail.dtype, generator=generator)
            tail.copy_(torch.lt(uniform, tail))
