import copy

import numpy as np
import pytest
import torch

from ebmgraph import EnergyModel, Graph
from ebmgraph.estimators import (
    ais_log_partition,
    default_betas,
    estimate_log_likelihood,
    free_energy_is_exact,
    log_marginal,
    log_partition,
    unnormalised_log_marginal,
    variational_lower_bound,
)
from ebmgraph.units import Gaussian
from helpers import SMALL_GRAPHS, random_model
from oracles import JointTable

DEEP = ["dbm", "drm_softmax", "skip_spin"]
SHALLOW = ["rbm", "three_visible"]
GAUSSIAN_TOP = (
    [("v", 4, "bernoulli", True), ("h1", 3, "bernoulli", False), ("h2", 2, Gaussian(0.7), False)],
    [("v", "h1"), ("h1", "h2")],
)


def every_visible_state(model: EnergyModel) -> dict:
    """Every joint state of the visible layers that has positive probability, one per row."""
    visible = list(model.graph.visible)
    rows, _ = JointTable(model).marginal(visible)
    offsets = np.cumsum([0] + [model.graph[name].size for name in visible])
    return {name: torch.from_numpy(rows[:, offsets[i] : offsets[i + 1]]) for i, name in enumerate(visible)}


def binary_visible_states(model: EnergyModel, n_visible: int) -> dict:
    codes = torch.arange(2**n_visible)
    bits = (codes[:, None] >> torch.arange(n_visible - 1, -1, -1)) & 1
    return {"v": bits.to(model.dtype)}


@pytest.mark.parametrize("name", SHALLOW)
def test_unnormalised_log_marginal_exact_for_one_hidden_layer(name):
    model = random_model(*SMALL_GRAPHS[name], seed=1, std=2.0)
    observed = every_visible_state(model)

    log_p = unnormalised_log_marginal(model, observed) - log_partition(model)

    assert free_energy_is_exact(model, model.graph.visible)
    torch.testing.assert_close(log_p, log_marginal(model, observed), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", DEEP)
@pytest.mark.parametrize("std", [0.5, 2.0])
def test_variational_bound_below_exact(name, std):
    model = random_model(*SMALL_GRAPHS[name], seed=2, std=std)
    observed = every_visible_state(model)

    bound = variational_lower_bound(model, observed) - log_partition(model)
    gap = log_marginal(model, observed) - bound

    assert not free_energy_is_exact(model, model.graph.visible)
    assert gap.min().item() >= -1e-10
    # The bound is not trivially loose: mean field recovers most of log p(v).
    assert gap.max().item() < 1.0


def test_variational_bound_below_exact_gaussian_top_layer():
    model = random_model(*GAUSSIAN_TOP, seed=3, std=0.8)
    observed = binary_visible_states(model, 4)

    gap = log_marginal(model, observed) - (variational_lower_bound(model, observed) - log_partition(model))

    assert gap.min().item() >= -1e-10
    assert gap.max().item() < 0.5


@pytest.mark.parametrize("name", SHALLOW)
def test_variational_bound_tight_for_one_hidden_layer(name):
    # With the hidden layers independent given the data, mean field is the exact posterior.
    model = random_model(*SMALL_GRAPHS[name], seed=4, std=2.0)
    observed = every_visible_state(model)

    bound = variational_lower_bound(model, observed, steps=1)

    torch.testing.assert_close(bound, -model.free_energy(observed), rtol=0, atol=1e-10)


def test_variational_bound_tight_for_gaussian_hidden_layer():
    graph = Graph()
    graph.add_layer("v", 4, visible=True)
    graph.add_layer("h", 3, Gaussian(0.6))
    graph.add_edge("v", "h")
    model = EnergyModel(graph, init_std=0.5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    observed = binary_visible_states(model, 4)

    bound = variational_lower_bound(model, observed, steps=1)

    torch.testing.assert_close(bound, -model.free_energy(observed), rtol=0, atol=1e-10)


def test_variational_bound_tight_when_hidden_layers_decoupled():
    model = random_model(*SMALL_GRAPHS["dbm"], seed=6, std=2.0)
    with torch.no_grad():
        model.weights["h1-h2"].zero_()
    observed = every_visible_state(model)

    bound = variational_lower_bound(model, observed) - log_partition(model)

    torch.testing.assert_close(bound, log_marginal(model, observed), rtol=0, atol=1e-9)


def test_variational_bound_gap_second_order_in_coupling():
    # Mean field drops the h1-h2 correlation, which costs O(W^2) nats: halving W quarters the gap.
    gaps = []
    for std in (0.1, 0.05):
        model = random_model(*SMALL_GRAPHS["dbm"], seed=7, std=std)
        observed = every_visible_state(model)
        gap = log_marginal(model, observed) - (variational_lower_bound(model, observed) - log_partition(model))
        assert gap.min().item() >= 0
        gaps.append(gap.max().item())

    assert gaps[0] < 0.01
    assert 0.2 < gaps[1] / gaps[0] < 0.3


def test_variational_bound_float32_matches_float64():
    model64 = random_model(*SMALL_GRAPHS["drm_softmax"], seed=8, std=1.0)
    model32 = copy.deepcopy(model64).float()
    observed = every_visible_state(model64)

    bound64 = variational_lower_bound(model64, observed)
    bound32 = variational_lower_bound(model32, {name: value.float() for name, value in observed.items()})

    assert bound32.dtype == torch.float32
    torch.testing.assert_close(bound32.double(), bound64, rtol=0, atol=1e-4)


def test_more_mean_field_steps_tighten_bound():
    model = random_model(*SMALL_GRAPHS["dbm"], seed=9, std=2.0)
    observed = every_visible_state(model)

    loose = variational_lower_bound(model, observed, steps=0)
    tight = variational_lower_bound(model, observed, steps=50)

    assert (tight >= loose - 1e-12).all()
    assert (tight > loose + 1e-6).any()


# Average test log-likelihood --------------------------------------------------------


def test_estimate_log_likelihood_with_exact_log_z():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=10, std=1.0)
    observed = every_visible_state(model)
    log_z = log_partition(model)

    estimate = estimate_log_likelihood(model, observed, log_z, batch_size=7)

    assert estimate.exact_free_energy
    assert estimate.n_rows == 32
    assert estimate.mean == pytest.approx(log_marginal(model, observed).mean().item(), abs=1e-10)
    assert estimate.low == estimate.mean == estimate.high


def test_estimate_log_likelihood_with_ais():
    # 100 AIS runs over 1,500 temperatures, base fitted to the data.
    model = random_model(*SMALL_GRAPHS["dbm"], seed=11, std=1.0)
    table = JointTable(model)
    rows = np.random.default_rng(1).choice(len(table.log_p), size=300, p=np.exp(table.log_p))
    observed = {"v": torch.from_numpy(table.states["v"][rows])}
    ais = ais_log_partition(
        model, observed, generator=torch.Generator().manual_seed(2), betas=default_betas(((0.5, 100), (0.9, 400), (1.0, 1000)))
    )
    exact_average = log_marginal(model, observed).mean().item()

    estimate = estimate_log_likelihood(model, observed, ais)

    assert not estimate.exact_free_energy
    assert estimate.log_z == ais.log_z
    assert estimate.low <= estimate.mean <= estimate.high
    assert estimate.high - estimate.low == pytest.approx(ais.log_z_high - ais.log_z_low)
    bound_average = variational_lower_bound(model, observed).mean().item()
    assert estimate.mean == pytest.approx(bound_average - ais.log_z, abs=1e-9)
    # A lower bound, up to the AIS error of 0.1 nats at most.
    assert exact_average - 0.5 < estimate.mean < exact_average + 0.1


def test_estimate_log_likelihood_batches_agree():
    model = random_model(*SMALL_GRAPHS["drm_softmax"], seed=12, std=1.0)
    observed = every_visible_state(model)

    whole = estimate_log_likelihood(model, observed, 3.0)
    batched = estimate_log_likelihood(model, observed, 3.0, batch_size=5)

    assert batched.mean == pytest.approx(whole.mean, abs=1e-10)


# Argument checks ----------------------------------------------------------------------


def test_likelihood_rejects_data_of_wrong_width():
    model = random_model(*SMALL_GRAPHS["dbm"], seed=1)

    with pytest.raises(ValueError, match=r"layer 'v': expected shape \(batch, 4\), got \(2, 5\)"):
        estimate_log_likelihood(model, {"v": torch.zeros(2, 5, dtype=torch.float64)}, 0.0)


def test_likelihood_rejects_fractional_data():
    model = random_model(*SMALL_GRAPHS["dbm"], seed=1)

    with pytest.raises(ValueError, match=r"layer 'v': expected values in \{0, 1\} for bernoulli units, got 0.5"):
        variational_lower_bound(model, {"v": torch.full((2, 4), 0.5, dtype=torch.float64)})


def test_likelihood_rejects_empty_observed():
    with pytest.raises(ValueError, match="observed is empty"):
        unnormalised_log_marginal(random_model(*SMALL_GRAPHS["dbm"], seed=1), {})


def test_likelihood_rejects_every_layer_observed():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)
    state = {"v": torch.zeros(1, 5, dtype=torch.float64), "h": torch.zeros(1, 4, dtype=torch.float64)}

    with pytest.raises(ValueError, match=r"observed gives every layer; use -model.energy\(state\)"):
        variational_lower_bound(model, state)


@pytest.mark.parametrize(
    "log_z, message",
    [
        (float("nan"), "log_z must be an AISResult or a finite number, got nan"),
        ("3.0", "log_z must be an AISResult or a finite number, got '3.0'"),
        (torch.zeros(2), r"log_z must be a single number, got a tensor of shape \(2,\)"),
    ],
)
def test_estimate_rejects_bad_log_z(log_z, message):
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)

    with pytest.raises(ValueError, match=message):
        estimate_log_likelihood(model, {"v": torch.zeros(1, 5, dtype=torch.float64)}, log_z)


def test_estimate_rejects_bad_batch_size():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)

    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        estimate_log_likelihood(model, {"v": torch.zeros(1, 5, dtype=torch.float64)}, 0.0, batch_size=0)
