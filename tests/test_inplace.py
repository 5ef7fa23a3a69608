"""The in-place path of Schedule.gibbs and Schedule.mean_field against the out-of-place one.

A schedule call that autograd does not record runs in preallocated buffers
(:mod:`ebmgraph.inplace`). With grad mode on and a parameter that requires grad,
it runs the out-of-place loop. Both do the same operations in the same order
with the same draws, so their results must agree value for value.
"""

from __future__ import annotations

import pytest
import torch

from ebmgraph import Gaussian
from ebmgraph.inplace import records_gradients
from ebmgraph.sampling import BULK_MIN_UNITS
from helpers import SMALL_GRAPHS, random_model

GRAPHS = dict(SMALL_GRAPHS)
# Layers large enough for the 16-bit bulk sampler at the batch below.
GRAPHS["large_rbm"] = ([("v", 100, "bernoulli", True), ("h", 80, "bernoulli", False)], [("v", "h")])
GRAPHS["gaussian"] = ([("v", 5, Gaussian(std=(1.0, 0.5, 2.0, 1.0, 0.7)), True), ("h", 4, "bernoulli", False)], [("v", "h")])
BATCH = 400


def model_and_state(name: str, dtype: torch.dtype):
    layers, edges = GRAPHS[name]
    model = random_model(layers, edges, seed=3, std=0.5, dtype=dtype)
    with torch.no_grad():
        state = model.schedule().init_chains(BATCH, generator=torch.Generator().manual_seed(4)).state
    return model, state


def detached(state):
    return {name: tensor.detach() for name, tensor in state.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_gibbs_in_place_matches_traced(name, dtype):
    model, state = model_and_state(name, dtype)
    schedule = model.schedule()

    traced, traced_means = schedule.gibbs(state, 3, generator=torch.Generator().manual_seed(5), return_means=True)
    with torch.no_grad():
        in_place, in_place_means = schedule.gibbs(state, 3, generator=torch.Generator().manual_seed(5), return_means=True)

    assert traced_means[schedule.free[0]].requires_grad, "the reference run must take the out-of-place path"
    for layer, tensor in detached(traced).items():
        assert torch.equal(in_place[layer], tensor), layer
    for layer, tensor in detached(traced_means).items():
        assert torch.equal(in_place_means[layer], tensor), layer


def test_large_rbm_takes_bulk_sampler():
    model, _ = model_and_state("large_rbm", torch.float32)
    assert BATCH * model.graph["h"].size >= BULK_MIN_UNITS


@pytest.mark.parametrize("damping", [0.0, 0.4])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_mean_field_in_place_matches_traced(name, damping):
    model, state = model_and_state(name, torch.float64)
    clamped = model.graph.visible
    schedule = model.schedule(clamped)
    data = {layer: state[layer] for layer in clamped}

    traced = schedule.mean_field(data, 4, damping=damping)
    with torch.no_grad():
        in_place = schedule.mean_field(data, 4, damping=damping)

    assert any(tensor.requires_grad for tensor in traced.values())
    for layer, tensor in detached(traced).items():
        assert torch.equal(in_place[layer], tensor), layer


def test_mean_field_in_place_keeps_given_start():
    model, state = model_and_state("dbm", torch.float64)
    schedule = model.schedule(("v",))
    start = {"v": state["v"], "h1": state["h1"].clone(), "h2": state["h2"].clone()}
    copies = {layer: tensor.clone() for layer, tensor in start.items()}

    with torch.no_grad():
        damped = schedule.mean_field(start, 3, damping=0.5)
    traced = schedule.mean_field(start, 3, damping=0.5)

    for layer, tensor in copies.items():
        assert torch.equal(start[layer], tensor), f"caller's {layer} was written"
    for layer, tensor in detached(traced).items():
        assert torch.equal(damped[layer], tensor), layer


def test_gibbs_in_place_returns_fresh_tensors():
    model, state = model_and_state("rbm", torch.float64)
    schedule = model.schedule()

    with torch.no_grad():
        first = schedule.gibbs(state, 2, generator=torch.Generator().manual_seed(6))
        kept = {layer: tensor.clone() for layer, tensor in first.items()}
        schedule.gibbs(first, 2, generator=torch.Generator().manual_seed(7))

    for layer, tensor in kept.items():
        assert torch.equal(first[layer], tensor), f"a later call overwrote the returned {layer}"


def test_records_gradients_follows_grad_mode_and_parameters():
    model, state = model_and_state("rbm", torch.float64)

    assert records_gradients(model, state)
    with torch.no_grad():
        assert not records_gradients(model, state)
    model.requires_grad_(False)
    assert not records_gradients(model, state)
    assert records_gradients(model, {"v": state["v"].clone().requires_grad_()})
