"""Exact log partition functions and marginals by enumeration, for small models.

These are the oracles the approximate estimators are tested against. Only the
cheapest set of layers is enumerated: a set whose complement is pairwise
non-adjacent, so the complement is summed out analytically through the free
energy. For an RBM that is the smaller layer; for a DBM ``v - h1 - h2`` it is
``h1`` alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

import torch

from ebmgraph.model import EnergyModel

__all__ = ["DEFAULT_MAX_STATES", "enumeration_layers", "log_partition", "log_marginal", "enumerate_states"]

DEFAULT_MAX_STATES = 2**24
"""Default maximum number of enumerated states of the exact routines (their ``max_states``)."""


def enumeration_layers(model: EnergyModel, among: Iterable[str] | None = None) -> tuple[str, ...]:
    """Cheapest set of layers to enumerate so that the rest of ``among`` can be summed out.

    Parameters
    ----------
    model : EnergyModel
    among : iterable of str, optional
        The layers to sum over (all layers by default). The returned subset leaves
        a remainder of pairwise non-adjacent layers.

    Raises
    ------
    ValueError
        When no such subset exists because continuous layers are adjacent to each other.
    """
    graph = model.graph
    pool = list(graph.layer_names if among is None else among)
    best, best_cost = None, math.inf
    for count in range(len(pool) + 1):
        for subset in itertools.combinations(pool, count):
            rest = [name for name in pool if name not in subset]
            if any(not graph[name].units.is_discrete for name in subset):
                continue
            if any(graph.nx.has_edge(a, b) for a, b in itertools.combinations(rest, 2)):
                continue
            cost = sum(math.log(graph[name].units.n_states(graph[name].size)) for name in subset)
            if cost < best_cost:
                best, best_cost = subset, cost
    if best is None:
        raise ValueError(
            f"layers {pool} cannot be summed exactly: continuous layers that are joined by an edge "
            "can be neither enumerated nor summed out together"
        )
    return tuple(best)


def _check_budget(model: EnergyModel, layers: tuple[str, ...], max_states: int) -> int:
    count = 1.0
    for name in layers:
        layer = model.graph[name]
        count *= layer.units.n_states(layer.size)
    if count > max_states:
        sizes = ", ".join(f"{name} ({model.graph[name].size} units)" for name in layers)
        raise ValueError(
            f"exact enumeration needs {count:.4g} states of layers {sizes}, more than max_states={max_states}; "
            "use a smaller model or an approximate estimator"
        )
    return int(count)


def enumerate_states(model: EnergyModel, layers: Iterable[str]) -> dict[str, torch.Tensor]:
    """Enumerate every joint state of ``layers``, as a state with one row per joint state.

    Rows follow counting order: the first layer is the slowest to change, and within
    a layer the first unit is the most significant digit.
    """
    layers = list(layers)
    per_layer = [model.graph[name].units.enumerate_states(model.graph[name].size, dtype=model.dtype, device=model.device) for name in layers]
    if not layers:
        return {}
    counts = [states.shape[0] for states in per_layer]
    grids = torch.meshgrid(*[torch.arange(n, device=model.device) for n in counts], indexing="ij")
    return {name: states[grid.reshape(-1)] for name, states, grid in zip(layers, per_layer, grids)}


@torch.no_grad()
def log_partition(model: EnergyModel, *, max_states: int = DEFAULT_MAX_STATES) -> torch.Tensor:
    """Exact ``log Z`` by enumerating the cheapest layers and summing out the rest.

    Returns a 0-dimensional tensor in the model's dtype. Raises ``ValueError``,
    saying how many states it would take, when more than ``max_states`` states
    would be enumerated.
    """
    layers = enumeration_layers(model)
    _check_budget(model, layers, max_states)
    if not layers:
        raise ValueError("every layer is summed out; the graph has no edge")
    states = enumerate_states(model, layers)
    summed_out = [name for name in model.graph.layer_names if name not in layers]
    return torch.logsumexp(-model.free_energy(states, summed_out=summed_out), dim=0)


@torch.no_grad()
def log_marginal(
    model: EnergyModel,
    observed: Mapping[str, torch.Tensor],
    *,
    log_z: torch.Tensor | None = None,
    max_states: int = DEFAULT_MAX_STATES,
) -> torch.Tensor:
    """Exact ``log p(observed)``, summing every other layer, shape ``(batch,)``.

    Parameters
    ----------
    observed : dict of str to Tensor, each ``(batch, size)``
        States of some layers (for example the visible ones).
    log_z : Tensor, optional
        A precomputed :func:`log_partition`.
    """
    observed = model.check_state(observed, allow_means=False)
    if not observed:
        raise ValueError("observed is empty; give the state of at least one layer")
    others = [name for name in model.graph.layer_names if name not in observed]
    log_z = log_partition(model, max_states=max_states) if log_z is None else log_z
    if not others:
        return -model.energy(observed) - log_z

    layers = enumeration_layers(model, among=others)
    count = _check_budget(model, layers, max_states)
    summed_out = [name for name in others if name not in layers]
    batch = next(iter(observed.values())).shape[0]
    if not layers:
        return -model.free_energy(observed, summed_out=summed_out) - log_z

    enumerated = enumerate_states(model, layers)
    joint = {name: tensor.repeat_interleave(count, dim=0) for name, tensor in observed.items()}
    joint.update({name: tensor.repeat(batch, 1) for name, tensor in enumerated.items()})
    free = model.free_energy(joint, summed_out=summed_out).reshape(batch, count)
    return torch.logsumexp(-free, dim=1) - log_z
