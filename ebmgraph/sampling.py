"""Exact Bernoulli draws that cost less random-number generation than ``torch.rand``.

On the CPU ``torch.rand`` spends one Mersenne-Twister output (32 bits) and a
conversion on every float, on one thread. :func:`bernoulli_` draws 16 random
bits per unit instead, four units per 64-bit word, and makes those words with a
counter-based generator that runs as element-wise tensor operations, so it uses
every intra-op thread:

* From :data:`SPLITMIX_MIN_WORDS` words on, word ``i`` of a call is
  ``mix(s + i * gamma)`` (mod ``2**64``), SplitMix64's output function (Steele, Lea and Flood, "Fast splittable pseudorandom number
  generators", OOPSLA 2014, with the finaliser constants of Vigna's
  ``splitmix64.c``). The key ``s`` is a fresh 64-bit draw from the caller's
  ``torch.Generator`` on every call, so the generator stays the only source of
  randomness and the same seed gives the same units for any number of threads.
  Fewer words come from ``Tensor.random_`` with the same generator.
* Let ``k`` be a unit's 16-bit digit, uniform on ``{0, ..., 2**16 - 1}``, and
  ``d = p - k * 2**-16``. If ``d >= 2**-16`` the unit is 1, and if ``d <= 0`` it
  is 0. Otherwise (a *tie*: ``k = floor(p * 2**16)``, probability at most
  ``2**-16`` per unit) it is 1 with probability ``r = d * 2**16``, drawn with
  ``torch.rand``.

So ``P(unit = 1) = floor(p * 2**16) / 2**16 + 2**-16 * P(u < r)``, which is ``p``
up to the resolution of the tie draw. The error is below ``2**-40`` in float32
and ``2**-69`` in float64, finer than ``torch.rand(...) < p`` (``2**-24`` in
float32). In float32 and float64 the subtraction ``d`` is exact at every tie,
because there ``p`` and ``k * 2**-16`` are within a factor of two (Sterbenz's
lemma) or ``k`` is 0. Elsewhere it is correctly rounded, so the three cases are
decided without rounding error.

In a block-Gibbs sweep over 1,000 chains of an RBM 784-500 on a 2-core AMD EPYC
machine, drawing the visible units with ``Tensor.random_`` words took about
2 ms after a two-thread matrix product, and the SplitMix64 words about 0.4 ms.

CUDA tensors, other dtypes and tensors of fewer than :data:`BULK_MIN_UNITS` units
use ``torch.rand`` and a comparison: the device generator is cheap there, and the
bulk path's extra operations would cost more than they save.

Where :func:`ebmgraph.kernels.load_cpu_kernels` has loaded the compiled kernel,
the SplitMix64 path makes its words, compares the digits and flags the tie
blocks in one fused pass. The arithmetic is the same, so the units are the same
bit for bit, and so is what the generator gives afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmgraph.kernels import loaded_kernel

__all__ = [
    "BULK_MIN_UNITS",
    "DIGIT_BITS",
    "SPLITMIX_MIN_WORDS",
    "BulkWords",
    "bernoulli",
    "bernoulli_",
    "bulk_words",
    "needs_word_scratch",
    "random_words",
    "splitmix64_words",
]

DIGIT_BITS = 16
"""Random bits per unit on the bulk path."""

BULK_MIN_UNITS = 32_000
"""Smallest tensor (in units) that takes the bulk path on the CPU.

On a 2-core AMD EPYC machine, each draw following a two-thread matrix product,
the comparison path took about 58 microseconds at 15,680 units and the bulk path
about 90; both took about 107 at 31,360. Below that the bulk path's fixed cost
(about two dozen operations and a read-back in the tie search) dominates.
"""

SPLITMIX_MIN_WORDS = 16_384
"""Fewest 64-bit words (four units each) that :func:`random_words` makes with SplitMix64.

Smaller draws use ``Tensor.random_``: one call beats the generator's twelve
element-wise operations there. Both sources draw only from the caller's
generator, and the choice depends only on the tensor's size.
"""

_DIGIT_SCALE = 2.0**-DIGIT_BITS
_DIGITS_PER_WORD = 64 // DIGIT_BITS
# Width of the row blocks in which ties are searched; a tie costs one draw per unit of its block.
_TIE_BLOCK = 512


def _signed(constant: int) -> int:
    """Return the int64 value with the bits of the unsigned 64-bit ``constant``."""
    return constant - 2**64 if constant >= 2**63 else constant


# SplitMix64's Weyl increment and the two multipliers of its output function.
_GAMMA = _signed(0x9E3779B97F4A7C15)
_MIX_1 = _signed(0xBF58476D1CE4E5B9)
_MIX_2 = _signed(0x94D049BB133111EB)


@dataclass(frozen=True, slots=True)
class BulkWords:
    """Scratch of :func:`bernoulli_`'s bulk path for up to ``capacity`` words.

    Attributes
    ----------
    offsets : Tensor, int64, shape ``(capacity,)``
        ``i * gamma`` (mod ``2**64``), computed once; empty when ``capacity`` is
        below :data:`SPLITMIX_MIN_WORDS`.
    words : Tensor, int64, shape ``(capacity,)``
        Receives the random words.
    shifted : Tensor, int64, shape like ``offsets``
        Holds the shifted copy in each xor-shift step.
    """

    offsets: torch.Tensor
    words: torch.Tensor
    shifted: torch.Tensor

    @property
    def capacity(self) -> int:
        """Number of 64-bit words the scratch holds."""
        return self.words.numel()


def bulk_words(n_units: int, device=None) -> BulkWords:
    """Allocate the scratch in which :func:`bernoulli_` draws random bits for ``n_units`` units."""
    n_words = (n_units + _DIGITS_PER_WORD - 1) // _DIGITS_PER_WORD
    words = torch.empty(n_words, dtype=torch.int64, device=device)
    if n_words < SPLITMIX_MIN_WORDS:
        offsets = words.new_empty(0)
    else:
        offsets = torch.arange(n_words, dtype=torch.int64, device=device).mul_(_GAMMA)
    return BulkWords(offsets, words, torch.empty_like(offsets))


def random_words(n_words: int, generator: torch.Generator | None, scratch: BulkWords) -> torch.Tensor:
    """Fill the first ``n_words`` words of ``scratch`` with random bits and return them.

    From :data:`SPLITMIX_MIN_WORDS` words on, one 64-bit key is drawn from
    ``generator`` and word ``i`` is SplitMix64's ``mix(key + i * gamma)``. Fewer
    words are drawn from ``generator`` directly with ``Tensor.random_``.

    Returns
    -------
    Tensor, int64, shape ``(n_words,)``
        A view of ``scratch.words``, valid until the scratch is used again.
    """
    if scratch.capacity < n_words:
        raise ValueError(
            f"scratch has room for {scratch.capacity} words, fewer than the {n_words} requested; "
            "allocate it with bulk_words(n_units) for at least 4 * n_words units"
        )
    if n_words < SPLITMIX_MIN_WORDS:
        # Full 64-bit range: random_() without bounds leaves the sign bit at zero.
        return scratch.words[:n_words].random_(-(2**63), None, generator=generator)

    return splitmix64_words(_draw_key(generator, scratch.words.device), n_words, scratch)


def _draw_key(generator: torch.Generator | None, device) -> torch.Tensor:
    """Draw one SplitMix64 key, all 64 bits, as an int64 scalar tensor."""
    key = torch.empty((), dtype=torch.int64, device=device)
    return key.random_(-(2**63), None, generator=generator)


def splitmix64_words(key: torch.Tensor, n_words: int, scratch: BulkWords) -> torch.Tensor:
    """Write ``mix(key + i * gamma)`` for ``i < n_words`` to ``scratch.words`` and return that view.

    ``mix`` is SplitMix64's output function and ``gamma`` its Weyl increment, so
    with ``key = seed + gamma`` the words are SplitMix64's outputs from ``seed``.

    Parameters
    ----------
    key : Tensor, int64, shape ``()``
        The stream's key, as the signed value of its 64 bits.
    n_words : int
        At least :data:`SPLITMIX_MIN_WORDS` and at most ``scratch.capacity``.
    scratch : BulkWords
    """
    if not SPLITMIX_MIN_WORDS <= n_words <= scratch.capacity:
        raise ValueError(
            f"n_words must be between SPLITMIX_MIN_WORDS={SPLITMIX_MIN_WORDS} and the scratch's "
            f"capacity {scratch.capacity}, got {n_words}"
        )
    # torch's int64 products and sums wrap modulo 2**64, which a test checks against Python integers.
    # uint64 would guarantee the wrap, but its CPU kernels are not vectorised.
    state, shifted = scratch.words[:n_words], scratch.shifted[:n_words]
    torch.add(scratch.offsets[:n_words], key, out=state)
    _xor_shift_right(state, 30, shifted)
    state.mul_(_MIX_1)
    _xor_shift_right(state, 27, shifted)
    state.mul_(_MIX_2)
    _xor_shift_right(state, 31, shifted)
    return state


def _xor_shift_right(state: torch.Tensor, bits: int, shifted: torch.Tensor) -> None:
    """``state ^= state >> bits`` with a logical shift (torch shifts int64 arithmetically)."""
    torch.bitwise_right_shift(state, bits, out=shifted)
    shifted.bitwise_and_((1 << (64 - bits)) - 1)
    state.bitwise_xor_(shifted)


def uses_bulk_path(probs: torch.Tensor) -> bool:
    """Return True if :func:`bernoulli_` takes the 16-bit bulk path for a tensor like ``probs``."""
    return probs.is_cpu and probs.dtype in (torch.float32, torch.float64) and probs.numel() >= BULK_MIN_UNITS


def needs_word_scratch(probs: torch.Tensor) -> bool:
    """Return True if :func:`bernoulli_` on a tensor like ``probs`` uses a :class:`BulkWords` scratch.

    The bulk path does, unless the compiled kernel (:mod:`ebmgraph.kernels`)
    makes the words itself.
    """
    if not uses_bulk_path(probs):
        return False
    n_words = -(-probs.numel() // _DIGITS_PER_WORD)
    return loaded_kernel() is None or n_words < SPLITMIX_MIN_WORDS


def bernoulli(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a tensor of independent Bernoulli(``probs``) units, each 0.0 or 1.0 in ``probs.dtype``.

    Parameters
    ----------
    probs : Tensor, any shape
        Probabilities in ``[0, 1]`` (not checked). It is left unchanged.
    generator : torch.Generator, optional
        Source of every random draw.
    """
    options = {"dtype": probs.dtype, "device": probs.device}
    scratch = torch.empty(probs.shape, **options).copy_(probs.detach())
    return bernoulli_(scratch, generator, out=torch.empty(probs.shape, **options))


def bernoulli_(
    probs: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    out: torch.Tensor,
    words: BulkWords | None = None,
) -> torch.Tensor:
    """Draw Bernoulli(``probs``) units into ``out``; ``probs`` is overwritten (used as scratch).

    Parameters
    ----------
    probs : Tensor, any shape
        Probabilities in ``[0, 1]`` (not checked). Its values are lost.
    generator : torch.Generator, optional
        Source of every random draw.
    out : Tensor, shape and dtype of ``probs``
        Receives the units, 0.0 or 1.0. It must not share memory with ``probs``.
        Contiguous ``probs`` and ``out`` avoid two copies on the bulk path.
    words : BulkWords, optional
        Scratch from :func:`bulk_words` for at least ``probs.numel()`` units,
        reused between calls to save allocations.

    Returns
    -------
    Tensor
        ``out``.
    """
    if not uses_bulk_path(probs):
        # Uniforms in float16 or bfloat16 would have 11 or 8 significant bits and bias small p.
        dtype = torch.float32 if probs.dtype in (torch.float16, torch.bfloat16) else probs.dtype
        uniform = torch.rand(probs.shape, dtype=dtype, device=probs.device, generator=generator)
        return torch.lt(uniform, probs, out=out)
    if not (probs.is_contiguous() and out.is_contiguous()):
        # The bulk path reads and writes flat views, so it runs on contiguous copies.
        units = bernoulli_(probs.contiguous(), generator, out=torch.empty(out.shape, dtype=out.dtype), words=words)
        return out.copy_(units)

    probs = probs.detach()
    n_units = probs.numel()
    n_words = (n_units + _DIGITS_PER_WORD - 1) // _DIGITS_PER_WORD
    kernel = loaded_kernel()
    if kernel is not None and n_words >= SPLITMIX_MIN_WORDS:
        tied = torch.empty(-(-n_units // _TIE_BLOCK), dtype=torch.uint8)
        kernel.bernoulli_digits(probs, out, tied, int(_draw_key(generator, probs.device)), _TIE_BLOCK)
        _settle_ties(out, probs, generator, tied=tied)
        return out

    if words is None or words.capacity < n_words:
        words = bulk_words(n_units)
    digits = random_words(n_words, generator, words).view(torch.uint16)[:n_units].view(probs.shape)
    _compare_digits(probs, digits, out)
    _settle_ties(out, probs, generator)
    return out


def _compare_digits(probs: torch.Tensor, digits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out <- clamp((p - k 2**-16) 2**16, 0, 1)``: 1 or 0 where the digit ``k`` decides, ``r`` at a tie."""
    out.copy_(digits)
    torch.sub(probs, out, alpha=_DIGIT_SCALE, out=out)
    return out.clamp_(0.0, _DIGIT_SCALE).mul_(1.0 / _DIGIT_SCALE)


def _settle_ties(
    units: torch.Tensor, scratch: torch.Tensor, generator: torch.Generator | None, *, tied: torch.Tensor | None = None
) -> None:
    """Replace every value strictly between 0 and 1 in ``units`` by a Bernoulli draw with that probability.

    ``tied`` flags the blocks of 512 units (the partial last block included)
    that contain such a value. The compiled kernel passes it, and
    :func:`_tie_flags` computes it otherwise. Each tied full block, then a tied
    last block, is redrawn whole as ``rand < value``, which keeps the decided
    units (``rand < 0`` is false, ``rand < 1`` true) and draws the ties.
    """
    if tied is None:
        tied = _tie_flags(units, scratch)
    flat = units.view(-1)
    n_blocks = flat.numel() // _TIE_BLOCK
    n_full = n_blocks * _TIE_BLOCK

    tied_blocks = tied[:n_blocks].nonzero().squeeze(1)
    if tied_blocks.numel():
        blocks = flat[:n_full].view(-1, _TIE_BLOCK)
        values = blocks[tied_blocks]
        uniform = torch.rand(values.shape, dtype=values.dtype, generator=generator)
        blocks[tied_blocks] = torch.lt(uniform, values).to(values.dtype)

    if n_full < flat.numel() and bool(tied[n_blocks]):
        tail = flat[n_full:]
        uniform = torch.rand(tail.shape, dtype=tail.dtype, generator=generator)
        tail.copy_(torch.lt(uniform, tail))


def _tie_flags(units: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """Flag each block of ``units`` that contains a value other than 0 and 1 (or NaN).

    ``frac`` is zero exactly on 0 and 1, so such a block has a nonzero maximum of
    ``frac``. Returns a bool tensor with one entry per block, the partial last
    block included.
    """
    fractions = torch.frac(units, out=scratch).view(-1)
    n_full = fractions.numel() // _TIE_BLOCK * _TIE_BLOCK
    maxima = [fractions[:n_full].view(-1, _TIE_BLOCK).amax(dim=1)]
    if n_full < fractions.numel():
        maxima.append(fractions[n_full:].amax().reshape(1))
    return torch.cat(maxima) != 0
