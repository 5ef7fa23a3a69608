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

from typing import TYPE_CHECKING

import torch

from ebmgraph.model import EnergyModel, State

if TYPE_CHECKING:
    from ebmgraph.schedule import Schedule

__all__ = ["sufficient_statistics", "log_likelihood_gradient", "ascend_log_likelihood_", "block_means"]


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

    Raises
    ------
    ValueError
        When a layer is missing or the batch has no rows. Values are not checked.
    """
    statistics, batch = _layer_statistics(model, state)
    result = {f"biases.{name}": statistic.mean(dim=0) for name, statistic in statistics.items()}
    for a, b in model.graph.edges:
        result[f"weights.{model.edge_key(a, b)}"] = statistics[a].T @ statistics[b] / batch
    return result


def _layer_statistics(model: EnergyModel, state: State) -> tuple[dict[str, torch.Tensor], int]:
    """Return each layer's statistic ``t(s)`` and the batch size, after checking that every layer is present."""
    graph = model.graph
    missing = [name for name in graph.layer_names if name not in state]
    if missing:
        raise ValueError(f"the state for the statistics is missing layer {missing[0]!r}; every layer needs a value or mean")
    statistics = {name: graph[name].units.statistic(state[name]) for name in graph.layer_names}
    batch = next(iter(statistics.values())).shape[0]
    if batch == 0:
        # A mean over no rows is NaN, which would reach the parameters as a false divergence.
        raise ValueError("the state for the statistics has 0 rows; a mini-batch needs at least one row")
    return statistics, batch


def log_likelihood_gradient(model: EnergyModel, data_state: State, model_state: State) -> dict[str, torch.Tensor]:
    """Data term minus model term for every parameter (an ascent direction of the log-likelihood).

    Equal to ``sufficient_statistics(data) - sufficient_statistics(model)`` up to
    rounding. Each weight's gradient is one product with the other accumulated
    into it, ``addmm_(data_a.T @ data_b, model_a.T, model_b, beta=1/n, alpha=-1/m)``,
    so no weight-sized intermediate is formed per term. The two states may have
    different batch sizes ``n`` and ``m`` (persistent chains).
    """
    data, n_data = _layer_statistics(model, data_state)
    negative, n_model = _layer_statistics(model, model_state)
    gradient = {f"biases.{name}": data[name].mean(dim=0) - negative[name].mean(dim=0) for name in model.graph.layer_names}
    for a, b in model.graph.edges:
        weight = torch.mm(data[a].T, data[b])
        gradient[f"weights.{model.edge_key(a, b)}"] = weight.addmm_(negative[a].T, negative[b], beta=1.0 / n_data, alpha=-1.0 / n_model)
    return gradient


def ascend_log_likelihood_(
    model: EnergyModel,
    data_state: State,
    model_state: State,
    *,
    weight_rate: float,
    bias_rate: float,
) -> None:
    """Add ``rate * log_likelihood_gradient(model, data_state, model_state)`` to the parameters in place.

    The plain SGD step without forming the gradient: each weight takes two
    ``addmm_`` calls, ``W += rate/n data_a.T @ data_b`` and
    ``W -= rate/m model_a.T @ model_b``, so no weight-sized tensor is written
    besides the weight itself. The result equals ``W + rate * gradient`` up to
    rounding. Call it under ``torch.no_grad()``.
    """
    data, n_data = _layer_statistics(model, data_state)
    negative, n_model = _layer_statistics(model, model_state)
    for name in model.graph.layer_names:
        bias = model.biases[name]
        bias.add_(data[name].sum(dim=0), alpha=bias_rate / n_data)
        bias.add_(negative[name].sum(dim=0), alpha=-bias_rate / n_model)
    for a, b in model.graph.edges:
        weight = model.weights[model.edge_key(a, b)]
        weight.addmm_(data[a].T, data[b], alpha=weight_rate / n_data)
        weight.addmm_(negative[a].T, negative[b], alpha=-weight_rate / n_model)


def block_means(schedule: Schedule, state: State, block: int = 0) -> State:
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
