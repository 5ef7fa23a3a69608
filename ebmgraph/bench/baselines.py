"""The two limits every engine figure is compared with, written in bare torch.

* *matmul-only*: the matrix products that the engine computes for the same
  work, back to back with preallocated outputs, and nothing else (no bias, no
  nonlinearity, no random draw, no Python beyond the loop). No implementation of
  the algorithm can beat it on the same device.
* *bare*: a straightforward hand-written implementation of the same algorithm
  in plain torch: ``addmm``, ``sigmoid``, ``torch.rand(...) < p`` draws and
  in-place SGD, with the layer sizes fixed in the code. It is what a user would
  write for this one model without a library.

Each ``*_step`` function returns a callable that does one measured call. All
random draws come from the generator passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = [
    "matmul_only",
    "product",
    "bare_rbm_gibbs",
    "bare_dbm_gibbs",
    "bare_drm_mean_field",
    "bare_drm_train",
    "bare_rbm_train",
]

Product = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(a, b, out)`` for ``torch.mm(a, b, out=out)``."""


def matmul_only(products: Sequence[Product]) -> Callable[[], None]:
    """Return a call that runs ``torch.mm(a, b, out=out)`` for every product in order."""
    products = tuple(products)

    def call() -> None:
        for a, b, out in products:
            torch.mm(a, b, out=out)

    return call


def product(rows: int, inner: int, columns: int, like: torch.Tensor, *, left_t: bool = False, right_t: bool = False) -> Product:
    """Operands of one ``(rows, inner) @ (inner, columns)`` product laid out like the engine's.

    ``left_t`` and ``right_t`` make that operand a transposed view of a
    contiguous matrix, as when the engine multiplies ``s.T @ h`` for a gradient
    or ``h @ W.t()`` for a layer below.
    """
    options = {"dtype": like.dtype, "device": like.device}
    a = torch.rand(inner, rows, **options).t() if left_t else torch.rand(rows, inner, **options)
    b = torch.randn(columns, inner, **options).t() if right_t else torch.randn(inner, columns, **options)
    return a, b, torch.empty(rows, columns, **options)


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    uniform = torch.rand(probs.shape, dtype=probs.dtype, device=probs.device, generator=generator)
    return torch.lt(uniform, probs).to(probs.dtype)


def bare_rbm_gibbs(weight, visible_bias, hidden_bias, visible, steps: int, generator) -> Callable[[], torch.Tensor]:
    """Return a call that runs ``steps`` block-Gibbs sweeps (hidden, then visible) from ``visible``, ``(chains, n_visible)``."""

    def call() -> torch.Tensor:
        v = visible
        for _ in range(steps):
            h = _draw(torch.sigmoid(torch.addmm(hidden_bias, v, weight)), generator)
            v = _draw(torch.sigmoid(torch.addmm(visible_bias, h, weight.t())), generator)
        return v

    return call


def bare_dbm_gibbs(weights, biases, visible, top, steps: int, generator) -> Callable[[], torch.Tensor]:
    """Return a call that runs ``steps`` sweeps of a DBM v-h1-h2: ``h1`` given ``(v, h2)``, then ``v`` and ``h2``."""
    w1, w2 = weights
    bv, b1, b2 = biases

    def call() -> torch.Tensor:
        v, h2 = visible, top
        for _ in range(steps):
            h1 = _draw(torch.sigmoid(torch.addmm(b1, v, w1).addmm_(h2, w2.t())), generator)
            v = _draw(torch.sigmoid(torch.addmm(bv, h1, w1.t())), generator)
            h2 = _draw(torch.sigmoid(torch.addmm(b2, h1, w2)), generator)
        return v

    return call


def bare_drm_mean_field(weights, biases, x, steps: int) -> Callable[[], torch.Tensor]:
    """Return a call that runs ``steps`` mean-field sweeps of a DRM x-h1-h2-y with ``x`` clamped, from zeros.

    Sweep order as the engine's: ``h1`` and ``y`` together, then ``h2``.
    """
    w1, w2, w3 = weights
    _, b1, b2, by = biases
    batch = x.shape[0]

    def call() -> torch.Tensor:
        from_x = torch.addmm(b1, x, w1)
        h2 = x.new_zeros(batch, w2.shape[1])
        y = x.new_zeros(batch, w3.shape[1])
        for _ in range(steps):
            h1 = torch.sigmoid(torch.addmm(from_x, h2, w2.t()))
            y = torch.sigmoid(torch.addmm(by, h2, w3))
            h2 = torch.sigmoid(torch.addmm(b2, h1, w2).addmm_(y, w3.t()))
        return y

    return call


def bare_drm_train(weights, biases, batches, steps: int, learning_rate: float, generator) -> Callable[[], None]:
    """Return a call that makes one SGD update of a DRM (mean-field CD) on the next ``(x, y)`` of ``batches``.

    Data term: ``h1`` and ``h2`` from zeros, ``steps`` mean-field sweeps with ``x``
    and ``y`` clamped. Model term: ``x`` and ``y`` drawn from their conditionals
    given the data term's means, then ``steps`` sweeps from the data term's means
    with the draws clamped. The parameters are updated in place.
    """
    w1, w2, w3 = weights
    bx, b1, b2, by = biases
    position = [0]

    def hidden_means(x, y, h1, h2):
        from_x = torch.addmm(b1, x, w1)
        from_y = torch.addmm(b2, y, w3.t())
        for _ in range(steps):
            h1 = torch.sigmoid(torch.addmm(from_x, h2, w2.t()))
            h2 = torch.sigmoid(torch.addmm(from_y, h1, w2))
        return h1, h2

    def call() -> None:
        x, y = batches[position[0] % len(batches)]
        position[0] += 1
        batch = x.shape[0]
        h1, h2 = hidden_means(x, y, x.new_zeros(batch, w1.shape[1]), x.new_zeros(batch, w2.shape[1]))
        x_model = _draw(torch.sigmoid(torch.addmm(bx, h1, w1.t())), generator)
        y_model = _draw(torch.sigmoid(torch.addmm(by, h2, w3)), generator)
        g1, g2 = hidden_means(x_model, y_model, h1, h2)

        rate = learning_rate / batch
        w1.add_(x.t() @ h1 - x_model.t() @ g1, alpha=rate)
        w2.add_(h1.t() @ h2 - g1.t() @ g2, alpha=rate)
        w3.add_(h2.t() @ y - g2.t() @ y_model, alpha=rate)
        for bias, data, model in ((bx, x, x_model), (b1, h1, g1), (b2, h2, g2), (by, y, y_model)):
            bias.add_(data.sum(0) - model.sum(0), alpha=rate)

    return call


def bare_rbm_train(weight, visible_bias, hidden_bias, batches, learning_rate: float, generator) -> Callable[[], None]:
    """Return a call that makes one persistent-CD-1 update of an RBM on the next batch, as BernoulliRBM orders it.

    The persistent hidden samples start at zero; each update draws the visible
    layer from them, takes the hidden means, steps and redraws the hidden samples.
    """
    state = {"position": 0, "chain": None}

    def call() -> None:
        v = batches[state["position"] % len(batches)]
        state["position"] += 1
        if state["chain"] is None:
            state["chain"] = v.new_zeros(v.shape[0], weight.shape[1])
        h_data = torch.sigmoid(torch.addmm(hidden_bias, v, weight))
        v_model = _draw(torch.sigmoid(torch.addmm(visible_bias, state["chain"], weight.t())), generator)
        h_model = torch.sigmoid(torch.addmm(hidden_bias, v_model, weight))

        rate = learning_rate / v.shape[0]
        weight.add_(v.t() @ h_data - v_model.t() @ h_model, alpha=rate)
        visible_bias.add_(v.sum(0) - v_model.sum(0), alpha=rate)
        hidden_bias.add_(h_data.sum(0) - h_model.sum(0), alpha=rate)
        state["chain"] = _draw(h_model, generator)

    return call
