r"""Log-likelihood of data: exact free energies where the hidden layers allow, mean-field bounds elsewhere.

For observed layers ``v`` and unobserved layers ``h``,
``log p(v) = log sum_h exp(-E(v, h)) - log Z = -F(v) - log Z``. When the unobserved
layers are pairwise non-adjacent (an RBM, or several visible layers around one
hidden layer), ``F(v)`` has a closed form. Otherwise (a DBM, a DRM) any fully
factorised ``q(h) = prod_l q_l(h_l)`` gives the variational lower bound

.. math::

    \log \sum_h e^{-E(v, h)} \;\ge\; \mathbb{E}_q[-E(v, h)] + \mathcal{H}(q),

and mean field picks the ``q_l`` (each in its layer's unit family) that make it tight.
``log Z`` comes from :func:`~ebmgraph.estimators.exact.log_partition` for small
models or :func:`~ebmgraph.estimators.ais.ais_log_partition` for the rest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ebmgraph.estimators.ais import AISResult
from ebmgraph.model import EnergyModel, State

__all__ = [
    "LogLikelihoodEstimate",
    "estimate_log_likelihood",
    "free_energy_is_exact",
    "unnormalised_log_marginal",
    "variational_lower_bound",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogLikelihoodEstimate:
    """Average log-likelihood of a data set, from :func:`estimate_log_likelihood`.

    Attributes
    ----------
    mean : float
        ``mean over rows of log p*(v) - log Z``, in nats per row.
    low, high : float
        ``mean`` with the upper and lower end of the AIS interval on ``log Z``
        (equal to ``mean`` when ``log Z`` was given as a number). They carry only
        the AIS error, not the gap of a variational bound.
    log_z : float
    exact_free_energy : bool
        True when ``log p*(v)`` is the exact ``-F(v)``; False when it is the mean-field
        lower bound, which makes ``mean`` an estimate of a lower bound.
    n_rows : int
    """

    mean: float
    low: float
    high: float
    log_z: float
    exact_free_energy: bool
    n_rows: int


def free_energy_is_exact(model: EnergyModel, observed: tuple[str, ...] | list[str]) -> bool:
    """Check whether the layers outside ``observed`` are pairwise non-adjacent, so ``F(observed)`` has a closed form."""
    others = [name for name in model.graph.layer_names if name not in observed]
    return not any(model.graph.nx.has_edge(a, b) for i, a in enumerate(others) for b in others[i + 1 :])


def _check_observed(model: EnergyModel, observed: Mapping[str, torch.Tensor]) -> State:
    if not isinstance(observed, Mapping):
        raise TypeError(f"observed must be a mapping from layer name to tensor, got {type(observed).__name__}")
    if not observed:
        raise ValueError("observed is empty; give the state of at least one layer")
    observed = model.check_state(observed, allow_means=False)
    if len(observed) == len(model.graph.layer_names):
        raise ValueError("observed gives every layer; use -model.energy(state) for the unnormalised log probability")
    return observed


@torch.no_grad()
def variational_lower_bound(
    model: EnergyModel,
    observed: Mapping[str, torch.Tensor],
    *,
    steps: int = 50,
    damping: float = 0.0,
) -> torch.Tensor:
    r"""Compute the mean-field lower bound on ``log sum_h exp(-E(v, h))``, shape ``(batch,)``.

    Mean field runs ``steps`` sweeps with the observed layers clamped, starting
    with a bottom-up pass. Each unobserved layer ``l`` then gets the input ``a_l``
    from its neighbours' means, and ``q_l`` is its unit family's distribution at
    ``a_l``, with mean statistic ``mu_l``. For that ``q`` the bound is exact:

    .. math::

        -E(v, \mu) + \sum_l \big(\mathrm{self}_l(\mu_l) + A_l(a_l) - a_l \cdot t_l(\mu_l)\big),

    with the family's log-partition ``A_l``, statistic ``t_l`` and self-energy; for
    Bernoulli units the sum is the entropy of ``q_l``. It is a lower bound for any
    number of sweeps, and tighter the nearer mean field is to its fixed point.

    Parameters
    ----------
    observed : dict of str to Tensor, each ``(batch, size)``
        Samples of some layers (usually the visible ones).
    steps : int
        Mean-field sweeps.
    damping : float in [0, 1)
        See :meth:`~ebmgraph.schedule.Schedule.mean_field`.
    """
    observed = _check_observed(model, observed)
    graph = model.graph
    unobserved = [name for name in graph.layer_names if name not in observed]
    schedule = model.schedule(tuple(observed))
    means = schedule.mean_field(observed, steps, init="bottom_up", damping=damping, validate=False)

    inputs = {name: model.input(name, means) for name in unobserved}
    state = dict(observed)
    for name in unobserved:
        state[name] = graph[name].units.mean(inputs[name])
    bound = -model.energy(state)
    for name in unobserved:
        units = graph[name].units
        mean = state[name]
        entropy_part = units.log_partition(inputs[name]) - (inputs[name] * units.statistic(mean)).sum(dim=-1)
        bound = bound + units.self_energy(mean) + entropy_part
    return bound


@torch.no_grad()
def unnormalised_log_marginal(
    model: EnergyModel,
    observed: Mapping[str, torch.Tensor],
    *,
    steps: int = 50,
) -> torch.Tensor:
    """Compute ``-F(observed)`` where it has a closed form, else :func:`variational_lower_bound`; shape ``(batch,)``.

    The closed form applies when the unobserved layers are pairwise non-adjacent
    (see :func:`free_energy_is_exact`); ``steps`` is used only otherwise.
    """
    observed = _check_observed(model, observed)
    if free_energy_is_exact(model, tuple(observed)):
        return -model.free_energy(observed)
    return variational_lower_bound(model, observed, steps=steps)


@torch.no_grad()
def estimate_log_likelihood(
    model: EnergyModel,
    observed: Mapping[str, torch.Tensor],
    log_z: AISResult | float | torch.Tensor,
    *,
    steps: int = 50,
    batch_size: int = 1000,
) -> LogLikelihoodEstimate:
    """Estimate the average log-likelihood of ``observed`` (for example a test set).

    Parameters
    ----------
    observed : dict of str to Tensor, each ``(n_rows, size)``
        Samples of some layers; every other layer is summed out.
    log_z : AISResult, float or 0-dimensional Tensor
        ``log Z`` of the model: an AIS result (whose interval becomes ``low`` and
        ``high``) or a number, for example the exact value.
    steps : int
        Mean-field sweeps, for graphs without a closed-form free energy.
    batch_size : int
        Rows per mean-field or free-energy batch, to bound memory.

    Returns
    -------
    LogLikelihoodEstimate
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    value, low_z, high_z = _log_z_interval(log_z)
    observed = _check_observed(model, observed)
    n_rows = next(iter(observed.values())).shape[0]
    if n_rows == 0:
        raise ValueError("observed has no rows; pass at least one row")

    total = 0.0
    for start in range(0, n_rows, batch_size):
        rows = {name: tensor[start : start + batch_size] for name, tensor in observed.items()}
        total += unnormalised_log_marginal(model, rows, steps=steps).double().sum().item()
    average = total / n_rows
    exact = free_energy_is_exact(model, tuple(observed))
    estimate = LogLikelihoodEstimate(
        mean=average - value,
        low=average - high_z,
        high=average - low_z,
        log_z=value,
        exact_free_energy=exact,
        n_rows=n_rows,
    )
    logger.info(
        "average log-likelihood %.4f nats over %d rows (%s free energy, log Z = %.4f)",
        estimate.mean, n_rows, "exact" if exact else "mean-field bound on the", value,
    )
    return estimate


def _log_z_interval(log_z) -> tuple[float, float, float]:
    if isinstance(log_z, AISResult):
        return log_z.log_z, log_z.log_z_low, log_z.log_z_high
    if isinstance(log_z, torch.Tensor):
        if log_z.numel() != 1:
            raise ValueError(f"log_z must be a single number, got a tensor of shape {tuple(log_z.shape)}")
        log_z = log_z.item()
    if isinstance(log_z, bool) or not isinstance(log_z, (int, float)) or not math.isfinite(log_z):
        raise ValueError(f"log_z must be an AISResult or a finite number, got {log_z!r}")
    return float(log_z), float(log_z), float(log_z)
