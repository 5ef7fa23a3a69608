"""Sufficient statistics of a state, and the log-likelihood gradient built from two of them.

For the energy of :class:`~ebmgraph.model.EnergyModel` the gradient of
``log p(v)`` with respect to each parameter is a data term minus a model term:

* bias of layer ``l``:      ``<t(s_l)>_data - <t(s_l)>_model``
* weight of edge ``(a, b)``: ``<t(s_a) t(s_b)^T>_data - <t(s_a) t(s_b)^T>_model``

where ``t`` is each unit family's statistic. An estimator supplies one state for
each term (samples, or conditional means where a layer's expectation is taken
analytically), and this module averages their statistics over the batch.
"""

from __future__ import annotations

import torch

from ebmgraph.model import EnergyModel, State

__all__ = ["sufficient_statistics", "log_likelihood_gradient", "block_means"]


def sufficient_statistics(model: EnergyModel, state: State) -> dict[str, torch.Tensor]:
    """Batch means of the statistics that multiply each parameter in ``-E``.

    Parameters
    ----------
    model : EnergyModel
    state : dict of str to Tensor, each ``(batch, size)``
        A value (or mean) for every layer.

    Returns
    -------
    dict of str to Tensor
        Keyed like ``model.named_parameters()``: ``"biases.<layer>"`` of shape
        ``(size,)`` and ``"weights.<a>-<b>"`` of shape ``(size of a, size of b)``.
    """
    graph = model.graph
    statistics = {name: graph[name].units.statistic(state[name]) for name in graph.layer_names}
    batch = next(iter(statistics.values())).shape[0]
    result = {f"biases.{name}": statistic.mean(dim=0) for name, statistic in statistics.items()}
    for a, b in graph.edges:
        result[f"weights.{model.edge_key(a, b)}"] = statistics[a].T @ statistics[b] / batch
    return result


def log_likelihood_gradient(model: EnergyModel, data_state: State, model_state: State) -> dict[str, torch.Tensor]:
    """Data term minus model term for every parameter (an ascent direction of the log-likelihood)."""
    positive = sufficient_statistics(model, data_state)
    negative = sufficient_statistics(model, model_state)
    return {name: positive[name] - negative[name] for name in positive}


def block_means(schedule, state: State, block: int = 0) -> State:
    """Replace the layers of one block by their conditional means given the rest of ``state``.

    Layers of a block are independent given the others and no statistic pairs two
    of them, so using their conditional means in place of samples leaves the
    expected statistics unchanged and lowers their variance (Rao-Blackwellisation).
    It also pairs each final visible sample with the hidden means given that same
    sample, not given the previous one.
    """
    model = schedule.model
    refreshed = dict(state)
    for name in schedule.blocks[block].layers:
        refreshed[name] = model.graph[name].units.mean(model.input(name, state))
    return refreshed
