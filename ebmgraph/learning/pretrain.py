"""Greedy layer-wise pretraining with restricted Boltzmann machines.

Each edge ``(source, target)`` of a pretraining order is trained as an RBM whose
visible layer has the source layer's unit family and whose data is the source
layer's *representation*: the data itself for a data layer, otherwise the
expected values ``E[source | representation of the layer before it]`` under the
RBM trained just before. The trained weights become the initial weights of the
edge in the full model.

* Bottom-up (DBN, DBM): ``v -> h1``, ``h1 -> h2``, ...
* Outside-in (DRM): ``x -> h1`` and ``y -> hL`` first, then inwards from both
  ends, ``h1 -> h2`` and ``hL -> h(L-1)``, until the two sides meet.

Biases: a layer pretrained as the visible side of some RBMs and the hidden side of
others gets the mean of the biases those RBMs learned for it.

NOTE: bottom-up pretraining for a DBM uses plain RBMs; the weight-doubling of
Salakhutdinov and Hinton (2009) for the first and last RBMs is not applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch

from ebmgraph.graph import Graph
from ebmgraph.learning.algorithms import CD, GradientEstimator
from ebmgraph.learning.trainer import Trainer, TrainingConfig
from ebmgraph.model import EnergyModel

__all__ = ["greedy_pretrain", "bottom_up_order", "outside_in_order"]

logger = logging.getLogger(__name__)


def _chain_edges(model: EnergyModel, chain: Sequence[str] | None) -> list[tuple[str, str]]:
    chain = list(chain or model.graph.layer_names)
    edges = list(zip(chain[:-1], chain[1:]))
    for a, b in edges:
        if not model.graph.nx.has_edge(a, b):
            raise ValueError(f"layers {a!r} and {b!r} are consecutive in the chain {chain} but not joined by an edge")
    return edges


def bottom_up_order(model: EnergyModel, chain: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Edges of a chain from its first layer upwards (default: the declaration order)."""
    return _chain_edges(model, chain)


def outside_in_order(model: EnergyModel, chain: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Edges of a chain from both ends inwards, alternating ends, as the DRM paper pretrains.

    For ``x - h1 - h2 - h3 - y``: ``(x, h1), (y, h3), (h1, h2), (h3, h2)``.
    The middle edge of a chain with an odd number of edges is taken from the first end.
    """
    front = _chain_edges(model, chain)
    back = [(b, a) for a, b in reversed(front)]
    order = []
    for index in range(len(front)):
        if len(order) == len(front):
            break
        order.append(front[index])
        if len(order) == len(front):
            break
        order.append(back[index])
    return order


def greedy_pretrain(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor],
    order: Sequence[tuple[str, str]],
    config: TrainingConfig,
    *,
    estimator: Callable[[], GradientEstimator] = lambda: CD(1),
    generator: torch.Generator | None = None,
    progress: bool = False,
    distributed: bool | None = None,
) -> dict[str, list]:
    """Pretrain the edges of ``model`` in ``order``, one RBM each, and copy the results in.

    Parameters
    ----------
    model : EnergyModel
        Receives the pretrained weights and biases in place.
    data : dict of str to Tensor, each ``(n, size)``
        Data for every source layer that starts a pretraining path.
    order : sequence of (source, target)
        Edges of the model; each source must be a data layer or the target of an
        earlier edge.
    config : TrainingConfig
        Hyper-parameters of every RBM.
    estimator : callable
        Builds a fresh gradient estimator for each RBM (CD-1 by default).
    distributed : bool, optional
        Data-parallel training of every RBM, as :class:`Trainer` takes it (by
        default whenever a process group is initialised). Every rank computes the
        next layer's representation of all rows itself.

    Returns
    -------
    dict of str to list
        The training history of each RBM, keyed ``"source->target"``.
    """
    representation = dict(model.check_state(data))
    learned_biases: dict[str, list[torch.Tensor]] = {}
    histories = {}
    for source, target in order:
        if source not in representation:
            raise ValueError(f"pretraining edge ({source!r}, {target!r}) needs data or an earlier edge ending at {source!r}")
        model.weight(source, target)
        rbm = _edge_rbm(model, source, target)
        logger.info("pretraining RBM %s -> %s", source, target)
        trainer = Trainer(rbm, estimator(), config, generator=generator, distributed=distributed)
        histories[f"{source}->{target}"] = trainer.fit({"v": representation[source]}, progress=progress)

        _copy_weight(model, source, target, rbm.weights["v-h"].detach())
        learned_biases.setdefault(source, []).append(rbm.biases["v"].detach())
        learned_biases.setdefault(target, []).append(rbm.biases["h"].detach())
        with torch.no_grad():
            representation[target] = rbm.conditional("h", {"v": representation[source]}).mean

    with torch.no_grad():
        for name, biases in learned_biases.items():
            model.biases[name].copy_(torch.stack(biases).mean(dim=0))
    return histories


def _edge_rbm(model: EnergyModel, source: str, target: str) -> EnergyModel:
    graph = Graph()
    graph.add_layer("v", model.graph[source].shape, model.graph[source].units, visible=True)
    graph.add_layer("h", model.graph[target].shape, model.graph[target].units)
    graph.add_edge("v", "h")
    rbm = EnergyModel(graph, init_std=0.0, dtype=model.dtype, device=model.device)
    # Initial weights as drawn for the full model, so pretraining starts where the model did.
    with torch.no_grad():
        rbm.weights["v-h"].copy_(model.weight(source, target))
    return rbm


def _copy_weight(model: EnergyModel, source: str, target: str, weight: torch.Tensor) -> None:
    with torch.no_grad():
        if model.edge_key(source, target) in model.weights:
            model.weights[model.edge_key(source, target)].copy_(weight)
        else:
            model.weights[model.edge_key(target, source)].copy_(weight.T)
