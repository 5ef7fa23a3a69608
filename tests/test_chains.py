"""Tests of PersistentChains: construction, advancing, saving and restoring, and the distribution reached."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmgraph import PersistentChains, drm, rbm
from oracles import JointTable, layer_states, total_variation

DTYPE = torch.float64


def small_model(name: str, seed: int = 11):
    """A float64 model with 7 discrete units, weights of std 1 and biases of std 0.5."""
    generator = torch.Generator().manual_seed(seed)
    options = dict(init_std=1.0, generator=generator, dtype=DTYPE)
    if name == "rbm":
        model = rbm(4, 3, hidden_units="spin", **options)
    elif name == "drm":
        model = drm(2, (2, 2), 3, y_units="softmax", **options)
    else:
        raise KeyError(name)
    with torch.no_grad():
        for bias in model.biases.values():
            bias.copy_(torch.randn(bias.shape, generator=generator, dtype=DTYPE) * 0.5)
    return model


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_hot_rows(indices, n_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(indices), n_classes).to(DTYPE)


def assert_states_equal(first, second):
    assert set(first) == set(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


# Construction --------------------------------------------------------------------------


def test_init_chains_shapes():
    model = small_model("drm")
    chains = model.schedule().init_chains(32, generator=seeded(0))

    assert isinstance(chains, PersistentChains)
    assert chains.n_chains == 32
    assert chains.n_sweeps == 0
    assert set(chains.state) == set(model.graph.layer_names)
    for name in model.graph.layer_names:
        assert chains.state[name].shape == (32, model.graph[name].size), name
        assert chains.state[name].dtype == DTYPE, name


def test_init_chains_draws_valid_states():
    model = small_model("drm")
    chains = model.schedule().init_chains(256, generator=seeded(0))

    # check_state with allow_means=False rejects anything but samples of each family.
    model.check_state(chains.state, allow_means=False)
    assert torch.equal(chains.state["y"].sum(dim=1), torch.ones(256, dtype=DTYPE))


def test_init_chains_draws_from_biases():
    # 40k chains: the standard error of a frequency is at most 0.0025, so 0.015 is 6 standard errors.
    model = small_model("drm")
    with torch.no_grad():
        model.biases["x"].copy_(torch.tensor([-2.0, 1.5], dtype=DTYPE))
        model.biases["y"].copy_(torch.tensor([0.0, 1.0, -1.0], dtype=DTYPE))
    chains = model.schedule().init_chains(40_000, generator=seeded(1))

    x_frequency = chains.state["x"].mean(dim=0)
    y_frequency = chains.state["y"].mean(dim=0)
    assert torch.allclose(x_frequency, torch.sigmoid(model.biases["x"].detach()), rtol=0, atol=0.015)
    assert torch.allclose(y_frequency, torch.softmax(model.biases["y"].detach(), dim=0), rtol=0, atol=0.015)


def test_init_chains_spin_draws_from_biases():
    # The mean of a spin is tanh(bias). Its standard error over 40k chains is at most 0.005,
    # so 0.03 is 6 standard errors.
    model = small_model("rbm")
    with torch.no_grad():
        model.biases["h"].copy_(torch.tensor([-1.0, 0.0, 0.8], dtype=DTYPE))
    chains = model.schedule().init_chains(40_000, generator=seeded(2))

    spin_mean = chains.state["h"].mean(dim=0)
    assert torch.allclose(spin_mean, torch.tanh(model.biases["h"].detach()), rtol=0, atol=0.03)


def test_init_chains_keeps_clamped_state():
    model = small_model("drm")
    y = one_hot_rows([0, 1, 2, 1], 3)
    chains = model.schedule("y").init_chains(4, generator=seeded(0), clamped_state={"y": y})
    assert torch.equal(chains.state["y"], y)


def test_init_chains_requires_clamped_state():
    model = small_model("drm")
    with pytest.raises(ValueError, match="'y'"):
        model.schedule("y").init_chains(4, generator=seeded(0))


def test_init_chains_rejects_clamped_batch_mismatch():
    model = small_model("drm")
    with pytest.raises(ValueError, match="batch size"):
        model.schedule("y").init_chains(5, generator=seeded(0), clamped_state={"y": one_hot_rows([0, 1], 3)})


@pytest.mark.parametrize("n_chains", [0, -3, True, 2.0])
def test_init_chains_rejects_bad_count(n_chains):
    model = small_model("rbm")
    with pytest.raises(ValueError, match="n_chains"):
        model.schedule().init_chains(n_chains)


# Advancing ----------------------------------------------------------------------------


def test_advance_changes_state():
    model = small_model("rbm")
    chains = model.schedule().init_chains(500, generator=seeded(0))
    before = {name: tensor.clone() for name, tensor in chains.state.items()}
    chains.advance(1, generator=seeded(1))

    # With 500 chains, equal states after a sweep would need every draw to repeat.
    assert not torch.equal(chains.state["v"], before["v"])
    assert not torch.equal(chains.state["h"], before["h"])


def test_advance_counts_sweeps():
    model = small_model("rbm")
    chains = model.schedule().init_chains(8, generator=seeded(0))
    chains.advance(3, generator=seeded(1))
    chains.advance(generator=seeded(2))
    chains.advance(2, generator=seeded(3))
    assert chains.n_sweeps == 6


def test_advance_returns_stored_state():
    model = small_model("rbm")
    chains = model.schedule().init_chains(8, generator=seeded(0))
    returned = chains.advance(2, generator=seeded(1))
    assert returned is chains.state


def test_advance_returns_last_block_means():
    # The RBM sweep draws h, then v, so the v means condition on the stored h.
    model = small_model("rbm")
    chains = model.schedule().init_chains(64, generator=seeded(0))
    state, means = chains.advance(2, generator=seeded(1), return_means=True)

    assert state is chains.state
    expected = torch.sigmoid(model.biases["v"] + state["h"] @ model.weights["v-h"].t()).detach()
    assert torch.allclose(means["v"], expected, rtol=0, atol=1e-12)


def test_advance_rejects_zero_steps():
    model = small_model("rbm")
    chains = model.schedule().init_chains(8, generator=seeded(0))
    before = chains.state
    with pytest.raises(ValueError, match="steps"):
        chains.advance(0)
    assert chains.n_sweeps == 0
    assert chains.state is before


def test_advance_keeps_clamped_layers():
    model = small_model("drm")
    y = one_hot_rows([2, 0, 1, 1, 0, 2], 3)
    chains = model.schedule("y").init_chains(6, generator=seeded(0), clamped_state={"y": y})
    chains.advance(5, generator=seeded(1))
    assert torch.equal(chains.state["y"], y)


def test_advance_state_has_no_grad():
    # The model's parameters require grad, but persistent chains must not build a graph.
    model = small_model("rbm")
    chains = model.schedule().init_chains(8, generator=seeded(0))
    _, means = chains.advance(2, generator=seeded(1), return_means=True)

    assert model.weights["v-h"].requires_grad
    for name, tensor in chains.state.items():
        assert not tensor.requires_grad, name
    for name, tensor in means.items():
        assert not tensor.requires_grad, name


def test_advance_split_equals_one_run():
    # The same generator drives the same draws, whether the sweeps come in one call or seven.
    model = small_model("drm")
    schedule = model.schedule()
    split = schedule.init_chains(64, generator=seeded(0))
    whole = schedule.init_chains(64, generator=seeded(0))

    generator = seeded(9)
    for _ in range(7):
        split.advance(1, generator=generator)
    whole.advance(7, generator=seeded(9))

    assert_states_equal(split.state, whole.state)
    assert split.n_sweeps == whole.n_sweeps


def test_same_seed_identical_chains():
    model = small_model("drm")
    schedule = model.schedule()
    first = schedule.init_chains(64, generator=seeded(4))
    second = schedule.init_chains(64, generator=seeded(4))
    first.advance(3, generator=seeded(5))
    second.advance(3, generator=seeded(5))
    assert_states_equal(first.state, second.state)


def test_different_seed_different_chains():
    model = small_model("drm")
    schedule = model.schedule()
    first = schedule.init_chains(64, generator=seeded(4))
    second = schedule.init_chains(64, generator=seeded(4))
    first.advance(3, generator=seeded(5))
    second.advance(3, generator=seeded(6))
    assert any(not torch.equal(first.state[name], second.state[name]) for name in first.state)


# Saving and restoring -------------------------------------------------------------------


def test_state_dict_round_trip():
    model = small_model("drm")
    chains = model.schedule().init_chains(32, generator=seeded(0))
    chains.advance(3, generator=seeded(1))
    saved = chains.state_dict()
    expected = {name: tensor.clone() for name, tensor in chains.state.items()}

    chains.advance(4, generator=seeded(2))
    chains.load_state_dict(saved)

    assert_states_equal(chains.state, expected)
    assert chains.n_sweeps == 3


def test_state_dict_replays_trajectory():
    model = small_model("drm")
    chains = model.schedule().init_chains(32, generator=seeded(0))
    saved = chains.state_dict()
    chains.advance(4, generator=seeded(7))
    after_first = {name: tensor.clone() for name, tensor in chains.state.items()}

    chains.load_state_dict(saved)
    chains.advance(4, generator=seeded(7))
    assert_states_equal(chains.state, after_first)


def test_state_dict_into_new_chains():
    model = small_model("drm")
    schedule = model.schedule()
    source = schedule.init_chains(32, generator=seeded(0))
    source.advance(2, generator=seeded(1))
    target = schedule.init_chains(32, generator=seeded(3))

    target.load_state_dict(source.state_dict())
    assert_states_equal(target.state, source.state)
    assert target.n_sweeps == 2


def test_state_dict_is_a_copy():
    model = small_model("rbm")
    chains = model.schedule().init_chains(16, generator=seeded(0))
    saved = chains.state_dict()
    original = saved["state"]["v"].clone()

    chains.state["v"].copy_(1.0 - chains.state["v"])
    assert torch.equal(saved["state"]["v"], original)


def test_load_state_dict_rejects_missing_layer():
    model = small_model("drm")
    chains = model.schedule().init_chains(8, generator=seeded(0))
    saved = chains.state_dict()
    del saved["state"]["h2"]
    with pytest.raises(ValueError, match="'h2'"):
        chains.load_state_dict(saved)


# Distribution reached ------------------------------------------------------------------------

# 60k chains, 40 sweeps of burn-in, then 8 samples 5 sweeps apart (480k samples), all
# by advance(1) calls. Exact iid draws of that number would have an expected total
# variation of about 0.004 (128 joint states) and 0.003 (64 states), so 0.02 leaves a
# wide margin. Growing the largest weight of the first edge by 0.5 moves the exact
# distribution by about 0.07 (test_chains_tolerance_detects_changed_weight).
N_CHAINS = 60_000
BURN_IN = 40
N_SAMPLES = 8
SPACING = 5
TV_TOLERANCE = 0.02
DETECTABLE_TV = 0.05


def joint_codes(model, state) -> np.ndarray:
    """Index of each joint state in :class:`JointTable` order (first layer most significant), or -1 if invalid."""
    codes = np.zeros(len(next(iter(state.values()))), dtype=np.int64)
    valid = np.ones(len(codes), dtype=bool)
    for name in model.graph.layer_names:
        layer = model.graph[name]
        states = layer_states(layer.units.name, layer.size)
        values = np.asarray(state[name])
        match = np.all(values[:, None, :] == states[None, :, :], axis=2)
        valid &= match.any(axis=1)
        codes = codes * len(states) + match.argmax(axis=1)
    return np.where(valid, codes, -1)


def exact_distribution(model, clamped_values) -> np.ndarray:
    table = JointTable(model)
    probs = np.exp(table.log_p)
    for name, value in clamped_values.items():
        probs = np.where(np.all(table.states[name] == np.asarray(value), axis=1), probs, 0.0)
    return probs / probs.sum()


def persistent_histogram(model, clamped_values, seed: int) -> np.ndarray:
    clamped = tuple(clamped_values)
    clamped_state = {name: torch.tensor(value, dtype=DTYPE).repeat(N_CHAINS, 1) for name, value in clamped_values.items()}
    generator = seeded(seed)
    chains = model.schedule(clamped).init_chains(N_CHAINS, generator=generator, clamped_state=clamped_state)

    for _ in range(BURN_IN):
        chains.advance(1, generator=generator)
    codes = []
    for _ in range(N_SAMPLES):
        for _ in range(SPACING):
            chains.advance(1, generator=generator)
        codes.append(joint_codes(model, {name: tensor.numpy() for name, tensor in chains.state.items()}))
    codes = np.concatenate(codes)

    assert (codes >= 0).all(), "a chain state is not a valid joint state"
    return np.bincount(codes, minlength=len(exact_distribution(model, clamped_values))) / len(codes)


CHAIN_CASES = [("rbm", {}), ("drm", {"y": [0.0, 0.0, 1.0]})]
CHAIN_IDS = ["rbm", "drm|y"]


@pytest.mark.parametrize("name, clamped_values", CHAIN_CASES, ids=CHAIN_IDS)
def test_chains_match_exact(name, clamped_values):
    model = small_model(name)
    probs = exact_distribution(model, clamped_values)
    empirical = persistent_histogram(model, clamped_values, seed=200)
    assert total_variation(empirical, probs) < TV_TOLERANCE


@pytest.mark.parametrize("name, clamped_values", CHAIN_CASES, ids=CHAIN_IDS)
def test_chains_tolerance_detects_changed_weight(name, clamped_values):
    # Negative control: with the largest weight of the first edge grown by 0.5 in
    # magnitude, the model is more than DETECTABLE_TV from the true one, so chains
    # sampling that model would fail test_chains_match_exact.
    model = small_model(name)
    changed = small_model(name)
    first_edge = "-".join(changed.graph.edges[0])
    with torch.no_grad():
        weight = changed.weights[first_edge]
        index = int(weight.abs().argmax())
        weight.view(-1)[index] += 0.5 * float(torch.sign(weight.view(-1)[index]))

    distance = total_variation(exact_distribution(model, clamped_values), exact_distribution(changed, clamped_values))
    assert distance > DETECTABLE_TV
