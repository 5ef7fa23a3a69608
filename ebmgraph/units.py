"""Unit families: the distribution of one layer given the input from its neighbours.

Every layer of an energy model has one unit family. The engine computes, for each
layer ``l``, its *input* (the natural parameter of its conditional)::

    input_l = b_l + sum over neighbours m of  t_m(s_m) @ W_ml

and the family turns that input into a distribution. The energy contribution of a
layer is ``self_energy(s_l) - b_l . t_l(s_l)`` and the contribution of an edge is
``- t_l(s_l)^T W_lm t_m(s_m)``, where ``t`` is the family's sufficient statistic
(the identity for every built-in family except a Gaussian with a standard
deviation other than one). So the conditional of one layer is::

    p(s_l | neighbours) = exp(t(s_l) . input_l - self_energy(s_l) - log_partition(input_l))

All methods take tensors of shape ``(batch, size)`` and reduce over the unit axis
where they return one number per row, so their results have shape ``(batch,)``.

A new family is a subclass of :class:`UnitFamily` registered with
:func:`register_unit_family`; the engine needs nothing else.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ebmgraph.sampling import BulkWords, bernoulli_

__all__ = [
    "UnitFamily",
    "Bernoulli",
    "Spin",
    "Softmax",
    "Gaussian",
    "register_unit_family",
    "get_unit_family",
    "make_unit_family",
    "unit_family_names",
]


class UnitFamily(abc.ABC):
    """The conditional distribution of one layer of units given its input.

    Subclasses implement :meth:`mean`, :meth:`sample`, :meth:`log_partition` and
    :meth:`check_support`. The defaults of :meth:`statistic` and :meth:`self_energy`
    suit families whose states enter the energy linearly.

    Attributes
    ----------
    name : str
        The registry name of the family.
    is_discrete : bool
        Whether a layer of this family has finitely many states, so that it can be
        enumerated by exact oracles.
    """

    name: str = "abstract"
    is_discrete: bool = True

    @abc.abstractmethod
    def mean(self, input: torch.Tensor) -> torch.Tensor:
        """Expected state given the input, shape ``(batch, size)``."""

    @abc.abstractmethod
    def sample(self, input: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one state per row given the input, shape ``(batch, size)``."""

    @abc.abstractmethod
    def log_partition(self, input: torch.Tensor) -> torch.Tensor:
        """Log-normaliser of the layer given its input, summed over units, shape ``(batch,)``.

        It is ``log sum_s exp(t(s) . input - self_energy(s))`` (an integral for
        continuous units), the term that summing the layer out adds to a free energy.
        """

    @abc.abstractmethod
    def check_support(self, state: torch.Tensor, *, layer: str, allow_means: bool) -> None:
        """Raise ``ValueError`` naming ``layer`` where ``state`` is not a valid state.

        With ``allow_means=True`` expected values (for example probabilities in
        ``[0, 1]`` for Bernoulli units) are accepted as well as samples.
        """

    def mean_(self, input: torch.Tensor) -> torch.Tensor:
        """Expected state given the input, computed in ``input`` where the family allows it.

        The engine's in-place form of :meth:`mean`: ``input`` is scratch space and its
        values may be lost. Returns the mean, ``input`` itself or a new tensor. The
        default calls :meth:`mean`.
        """
        return self.mean(input)

    def sample_(
        self,
        input: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        out: torch.Tensor,
        words: BulkWords | None = None,
    ) -> torch.Tensor:
        """Draw one state per row into ``out`` and return it; ``input`` may be overwritten.

        The engine's in-place form of :meth:`sample`, drawing from the same
        distribution. ``out`` has the shape and dtype of ``input`` and shares no
        memory with it. ``words`` is scratch from
        :func:`ebmgraph.sampling.bulk_words` that a family may use for random bits.
        The default copies the result of :meth:`sample`.
        """
        return out.copy_(self.sample(input, generator))

    def statistic(self, state: torch.Tensor) -> torch.Tensor:
        """Sufficient statistic ``t(s)`` that multiplies biases and weights."""
        return state

    def self_energy(self, state: torch.Tensor) -> torch.Tensor:
        """Energy term of the layer that depends on no parameter, shape ``(batch,)``."""
        return state.new_zeros(state.shape[0])

    def check_size(self, size: int, *, layer: str) -> None:
        """Raise ``ValueError`` naming ``layer`` if this family cannot have ``size`` units."""

    def enumerate_states(self, size: int, *, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
        """Enumerate every state of a layer of ``size`` units, shape ``(n_states, size)``.

        States are listed in counting order with the first unit as the most
        significant digit.
        """
        raise NotImplementedError(f"unit family {self.name!r} has no finite set of states to enumerate")

    def n_states(self, size: int) -> float:
        """Number of states of a layer of ``size`` units (``inf`` for continuous units)."""
        return math.inf

    def config(self) -> dict:
        """Constructor arguments that rebuild this family, for saving a declaration."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.__dict__.items()))))


def _check_finite(state: torch.Tensor, layer: str) -> None:
    bad = ~torch.isfinite(state)
    if bad.any():
        row, column = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"layer {layer!r}: state contains NaN or infinite values "
            f"(first at row {row}, unit {column}: {state[row, column].item()})"
        )


def _check_values(state: torch.Tensor, ok: torch.Tensor, layer: str, expected: str) -> None:
    if not bool(ok.all()):
        row, column = (int(i) for i in (~ok).nonzero()[0])
        raise ValueError(
            f"layer {layer!r}: expected {expected}, got {state[row, column].item()} "
            f"at row {row}, unit {column}"
        )


class Bernoulli(UnitFamily):
    """Binary units with states in {0, 1}.

    ``p(s_i = 1 | input) = sigmoid(input_i)``; the log-partition of one unit is
    ``softplus(input_i)``.
    """

    name = "bernoulli"

    def mean(self, input: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(input)

    def mean_(self, input: torch.Tensor) -> torch.Tensor:
        return input.sigmoid_()

    def sample(self, input: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # A draw carries no gradient; detaching lets the sampler work in place.
        return bernoulli_(torch.sigmoid(input.detach()), generator, out=torch.empty_like(input))

    def sample_(
        self,
        input: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        out: torch.Tensor,
        words: BulkWords | None = None,
    ) -> torch.Tensor:
        return bernoulli_(input.sigmoid_(), generator, out=out, words=words)

    def log_partition(self, input: torch.Tensor) -> torch.Tensor:
        return F.softplus(input).sum(dim=-1)

    def check_support(self, state: torch.Tensor, *, layer: str, allow_means: bool) -> None:
        _check_finite(state, layer)
        if allow_means:
            _check_values(state, (state >= 0) & (state <= 1), layer, "values in [0, 1] for bernoulli units")
        else:
            _check_values(state, (state == 0) | (state == 1), layer, "values in {0, 1} for bernoulli units")

    def enumerate_states(self, size: int, *, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
        return _counting_states((0.0, 1.0), size, dtype=dtype, device=device)

    def n_states(self, size: int) -> float:
        return 2.0**size


class Spin(UnitFamily):
    """Spin units with states in {-1, +1}.

    ``p(s_i = +1 | input) = sigmoid(2 input_i)``, so the mean is ``tanh(input_i)``;
    the log-partition of one unit is ``log(2 cosh(input_i))``. A spin model with
    fields ``h`` and couplings ``J`` equals a {0, 1} model with biases
    ``2 h - 2 sum_j J`` and weights ``4 J``, up to a constant in log Z.
    """

    name = "spin"

    def mean(self, input: torch.Tensor) -> torch.Tensor:
        return torch.tanh(input)

    def mean_(self, input: torch.Tensor) -> torch.Tensor:
        return input.tanh_()

    def sample(self, input: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_(input.detach().clone(), generator, out=torch.empty_like(input))

    def sample_(
        self,
        input: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        out: torch.Tensor,
        words: BulkWords | None = None,
    ) -> torch.Tensor:
        # s = 2 b - 1 with b ~ Bernoulli(sigmoid(2 input)); exact in floating point.
        bernoulli_(input.mul_(2).sigmoid_(), generator, out=out, words=words)
        return out.mul_(2).sub_(1)

    def log_partition(self, input: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(input, -input).sum(dim=-1)

    def check_support(self, state: torch.Tensor, *, layer: str, allow_means: bool) -> None:
        _check_finite(state, layer)
        if allow_means:
            _check_values(state, state.abs() <= 1, layer, "values in [-1, 1] for spin units")
        else:
            _check_values(state, state.abs() == 1, layer, "values in {-1, +1} for spin units")

    def enumerate_states(self, size: int, *, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
        return _counting_states((-1.0, 1.0), size, dtype=dtype, device=device)

    def n_states(self, size: int) -> float:
        return 2.0**size


class Softmax(UnitFamily):
    """One categorical variable coded one-hot over the ``size`` units of the layer.

    Exactly one unit is on: ``p(s = e_k | input) = softmax(input)_k``; the
    log-partition of the layer is ``logsumexp(input)``. This is the natural family
    for a class label.
    """

    name = "softmax"

    def mean(self, input: torch.Tensor) -> torch.Tensor:
        return torch.softmax(input, dim=-1)

    def sample(self, input: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Inverse-CDF draw: one uniform number per row, no multinomial call.
        probs = torch.softmax(input, dim=-1)
        cumulative = probs.cumsum(dim=-1)
        uniform = torch.rand((input.shape[0], 1), dtype=input.dtype, device=input.device, generator=generator)
        index = (cumulative < uniform * cumulative[:, -1:]).sum(dim=-1, keepdim=True)
        index = index.clamp_(max=input.shape[-1] - 1)
        return torch.zeros_like(input).scatter_(-1, index, 1.0)

    def log_partition(self, input: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(input, dim=-1)

    def check_support(self, state: torch.Tensor, *, layer: str, allow_means: bool) -> None:
        _check_finite(state, layer)
        tolerance = 1e-4 if state.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-8
        if allow_means:
            _check_values(state, (state >= 0) & (state <= 1), layer, "probabilities in [0, 1] for softmax units")
            row_ok = (state.sum(dim=-1) - 1).abs() <= tolerance
            expected = "rows that sum to 1 for softmax units"
        else:
            _check_values(state, (state == 0) | (state == 1), layer, "one-hot rows of 0 and 1 for softmax units")
            row_ok = state.sum(dim=-1) == 1
            expected = "one-hot rows (exactly one unit on) for softmax units"
        if not bool(row_ok.all()):
            row = int((~row_ok).nonzero()[0, 0])
            raise ValueError(
                f"layer {layer!r}: expected {expected}, but row {row} sums to {state[row].sum().item()}"
            )

    def enumerate_states(self, size: int, *, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.eye(size, dtype=dtype, device=device)

    def n_states(self, size: int) -> float:
        return float(size)


class Gaussian(UnitFamily):
    """Real-valued units with a fixed standard deviation (one by default).

    For standard deviation ``sigma`` the energy of the layer is
    ``sum_i s_i^2 / (2 sigma_i^2) - b . (s / sigma^2)`` and its edges carry
    ``s / sigma^2``, so the conditional is ``N(input, sigma^2)``: the input is the
    conditional mean. With ``sigma = 1`` this is the unit-variance energy
    ``|s|^2 / 2 - b . s - s^T W h``. The parameterisation is the one with
    ``v / sigma^2`` in the interaction (Cho et al.). It equals the centred form
    ``(v - b)^2 / (2 sigma^2) - (v / sigma^2)^T W h`` up to the constant
    ``sum_i b_i^2 / (2 sigma_i^2)``, which shifts log Z and every free energy alike.

    Parameters
    ----------
    std : float or sequence of float
        Standard deviation of every unit, or one per unit. It is fixed, not learned.
    """

    name = "gaussian"
    is_discrete = False

    def __init__(self, std: float | Sequence[float] = 1.0):
        if isinstance(std, (str, bytes)):
            raise TypeError(f"Gaussian std must be a number or a sequence of numbers, got {std!r}")
        values = (float(std),) if isinstance(std, (int, float)) else tuple(float(s) for s in std)
        if not values or not all(math.isfinite(s) and s > 0 for s in values):
            raise ValueError(f"Gaussian std must be positive and finite, got {std!r}")
        self.std = values[0] if len(values) == 1 and isinstance(std, (int, float)) else values

    def _variance(self, like: torch.Tensor) -> torch.Tensor | float:
        if isinstance(self.std, float):
            return self.std**2
        std = torch.as_tensor(self.std, dtype=like.dtype, device=like.device)
        if std.shape[0] != like.shape[-1]:
            raise ValueError(f"Gaussian family has {std.shape[0]} standard deviations for a layer of {like.shape[-1]} units")
        return std**2

    def check_size(self, size: int, *, layer: str) -> None:
        if isinstance(self.std, tuple) and len(self.std) != size:
            raise ValueError(f"layer {layer!r}: Gaussian family has {len(self.std)} standard deviations for {size} units")

    def statistic(self, state: torch.Tensor) -> torch.Tensor:
        if self.std == 1.0:
            return state
        return state / self._variance(state)

    def self_energy(self, state: torch.Tensor) -> torch.Tensor:
        return (state**2 / (2 * self._variance(state))).sum(dim=-1)

    def mean(self, input: torch.Tensor) -> torch.Tensor:
        return input

    def mean_(self, input: torch.Tensor) -> torch.Tensor:
        return input

    def sample(self, input: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(input.shape, dtype=input.dtype, device=input.device, generator=generator)
        return input + self._std(input) * noise

    def sample_(
        self,
        input: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        out: torch.Tensor,
        words: BulkWords | None = None,
    ) -> torch.Tensor:
        torch.randn(input.shape, dtype=input.dtype, device=input.device, generator=generator, out=out)
        return out.mul_(self._std(input)).add_(input)

    def _std(self, like: torch.Tensor) -> torch.Tensor | float:
        variance = self._variance(like)
        return variance**0.5 if isinstance(variance, float) else variance.sqrt()

    def log_partition(self, input: torch.Tensor) -> torch.Tensor:
        # log of the integral of exp(-s^2 / (2 var) + s input / var) over s, per unit.
        variance = self._variance(input)
        log_variance = torch.log(torch.as_tensor(variance, dtype=input.dtype, device=input.device))
        per_unit = input**2 / (2 * variance) + 0.5 * (math.log(2 * math.pi) + log_variance)
        return per_unit.expand_as(input).sum(dim=-1)

    def check_support(self, state: torch.Tensor, *, layer: str, allow_means: bool) -> None:
        _check_finite(state, layer)

    def config(self) -> dict:
        return {"std": self.std if isinstance(self.std, float) else list(self.std)}

    def __repr__(self):
        return f"Gaussian(std={self.std!r})"


def _counting_states(values: tuple[float, float], size: int, *, dtype, device) -> torch.Tensor:
    states = list(itertools.product(values, repeat=size))
    return torch.tensor(states, dtype=dtype, device=device).reshape(len(states), size)


_REGISTRY: dict[str, Callable[[], UnitFamily]] = {
    "bernoulli": Bernoulli,
    "spin": Spin,
    "softmax": Softmax,
    "gaussian": Gaussian,
}


def register_unit_family(name: str, factory: Callable[[], UnitFamily], *, replace: bool = False) -> None:
    """Register a unit family under ``name`` so layers can ask for it by name.

    Parameters
    ----------
    name : str
        The name layers use, for example ``"bernoulli"``.
    factory : callable
        Called with no arguments; returns a :class:`UnitFamily` instance. A
        :class:`UnitFamily` subclass with a no-argument constructor qualifies.
    replace : bool
        Allow replacing an existing registration.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"unit family name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"unit family {name!r} is already registered; pass replace=True to override it")
    if not callable(factory):
        raise TypeError(f"unit family factory for {name!r} must be callable, got {type(factory).__name__}")
    family = factory()
    if not isinstance(family, UnitFamily):
        raise TypeError(f"factory for unit family {name!r} returned {type(family).__name__}, not a UnitFamily")
    if family.name != name:
        raise ValueError(
            f"unit family registered as {name!r} reports name {family.name!r}; set the class attribute "
            f"name = {name!r} so saved declarations can be loaded again"
        )
    _REGISTRY[name] = factory


def make_unit_family(name: str, **config: Any) -> UnitFamily:
    """Build the family registered as ``name`` with constructor arguments ``config``."""
    if not config:
        return get_unit_family(name)
    family_type = type(get_unit_family(name))
    return family_type(**config)


def unit_family_names() -> list[str]:
    """Names of the registered unit families, sorted."""
    return sorted(_REGISTRY)


def get_unit_family(spec: str | UnitFamily) -> UnitFamily:
    """Resolve a registry name or an instance to a :class:`UnitFamily` instance."""
    if isinstance(spec, UnitFamily):
        return spec
    if isinstance(spec, str) and spec in _REGISTRY:
        family = _REGISTRY[spec]()
        if not isinstance(family, UnitFamily):
            raise TypeError(f"factory registered as {spec!r} returned {type(family).__name__}, not a UnitFamily")
        return family
    raise ValueError(f"unknown unit family {spec!r}; registered families are {unit_family_names()}")
