"""Tests of the block schedule: colouring invariants, exact block Gibbs and mean-field fixed points.

The statistical tests compare block Gibbs samples with the exact Boltzmann
distribution of :class:`oracles.JointTable`, which enumerates every joint state
in NumPy without the engine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmgraph import EnergyModel, Graph, compile_schedule, dbm, drm, rbm
from ebmgraph.schedule import Block, LayerUpdate, Schedule
from oracles import JointTable, layer_states, total_variation

DTYPE = torch.float64

# Conditional means written out here rather than taken from ebmgraph.units.
MEAN_OF_INPUT = {
    "bernoulli": torch.sigmoid,
    "spin": torch.tanh,
    "softmax": lambda layer_input: torch.softmax(layer_input, dim=-1),
}


# Graphs for the colouring tests ---------------------------------------------------


def _graph(layers, edges) -> EnergyModel:
    graph = Graph()
    for name, visible in layers:
        graph.add_layer(name, 2, visible=visible)
    for a, b in edges:
        graph.add_edge(a, b)
    return EnergyModel(graph, dtype=DTYPE)


def colouring_model(name: str) -> EnergyModel:
    if name == "rbm":
        return _graph([("v", True), ("h", False)], [("v", "h")])
    if name == "dbm":
        layers = [("v", True), ("h1", False), ("h2", False), ("h3", False)]
        return _graph(layers, [("v", "h1"), ("h1", "h2"), ("h2", "h3")])
    if name == "drm":
        layers = [("x", True), ("h1", False), ("h2", False), ("y", True)]
        return _graph(layers, [("x", "h1"), ("h1", "h2"), ("h2", "y")])
    if name == "skip":
        # The skip edge x-h2 closes the odd cycle x-h1-h2, so the graph is not bipartite.
        layers = [("x", True), ("h1", False), ("h2", False), ("y", True)]
        return _graph(layers, [("x", "h1"), ("h1", "h2"), ("h2", "y"), ("x", "h2")])
    if name == "star":
        leaves = ["l1", "l2", "l3", "l4"]
        return _graph([("c", False)] + [(leaf, True) for leaf in leaves], [("c", leaf) for leaf in leaves])
    if name == "multimodal":
        layers = [("v1", True), ("v2", True), ("h1", False), ("h2", False), ("top", False)]
        return _graph(layers, [("v1", "h1"), ("v2", "h2"), ("h1", "top"), ("h2", "top")])
    raise KeyError(name)


# (graph, clamped layers, expected number of blocks). The count is 1 when the free
# layers share no edge, 2 when they form a bipartite graph with an edge, and 3 for
# the triangle x-h1-h2 of the skip graph.
COLOURING_CASES = [
    ("rbm", (), 2),
    ("rbm", ("v",), 1),
    ("rbm", ("h",), 1),
    ("dbm", (), 2),
    ("dbm", ("v",), 2),
    ("dbm", ("h1",), 2),
    ("dbm", ("v", "h2"), 1),
    ("dbm", ("h1", "h3"), 1),
    ("drm", (), 2),
    ("drm", ("x",), 2),
    ("drm", ("y",), 2),
    ("drm", ("x", "y"), 2),
    ("drm", ("h1",), 2),
    ("drm", ("h1", "y"), 1),
    ("skip", (), 3),
    ("skip", ("y",), 3),
    ("skip", ("x",), 2),
    ("skip", ("h1",), 2),
    ("skip", ("h2",), 2),
    ("skip", ("x", "h1"), 2),
    ("skip", ("h1", "h2"), 1),
    ("star", (), 2),
    ("star", ("c",), 1),
    ("star", ("l1",), 2),
    ("star", ("l1", "l2", "l3"), 2),
    ("star", ("l1", "l2", "l3", "l4"), 1),
    ("multimodal", (), 2),
    ("multimodal", ("v1",), 2),
    ("multimodal", ("v1", "v2"), 2),
    ("multimodal", ("top",), 2),
    ("multimodal", ("h1", "h2"), 1),
]
COLOURING_IDS = [f"{name}|{','.join(clamped) or 'none'}" for name, clamped, _ in COLOURING_CASES]


def _edge_set(model: EnergyModel) -> set[frozenset[str]]:
    return {frozenset(edge) for edge in model.graph.edges}


def _distances(model: EnergyModel, sources) -> dict[str, int]:
    """Breadth-first distance of every reachable layer from ``sources``."""
    distance = {name: 0 for name in sources}
    frontier = list(sources)
    while frontier:
        following = []
        for name in frontier:
            for a, b in model.graph.edges:
                if name not in (a, b):
                    continue
                other = b if a == name else a
                if other not in distance:
                    distance[other] = distance[name] + 1
                    following.append(other)
        frontier = following
    return distance


@pytest.mark.parametrize("name, clamped, n_blocks", COLOURING_CASES, ids=COLOURING_IDS)
def test_colouring_blocks_are_independent_sets(name, clamped, n_blocks):
    model = colouring_model(name)
    edges = _edge_set(model)
    schedule = compile_schedule(model, clamped)

    adjacent = [
        (a, b)
        for block in schedule.blocks
        for i, a in enumerate(block.layers)
        for b in block.layers[i + 1 :]
        if frozenset((a, b)) in edges
    ]
    assert adjacent == []


@pytest.mark.parametrize("name, clamped, n_blocks", COLOURING_CASES, ids=COLOURING_IDS)
def test_colouring_blocks_partition_free_layers(name, clamped, n_blocks):
    model = colouring_model(name)
    schedule = compile_schedule(model, clamped)
    listed = [layer for block in schedule.blocks for layer in block.layers]
    expected_free = [layer for layer in model.graph.layer_names if layer not in clamped]

    assert sorted(listed) == sorted(expected_free)
    assert len(listed) == len(set(listed))
    assert list(schedule.free) == expected_free


@pytest.mark.parametrize("name, clamped, n_blocks", COLOURING_CASES, ids=COLOURING_IDS)
def test_colouring_excludes_clamped_layers(name, clamped, n_blocks):
    schedule = compile_schedule(colouring_model(name), clamped)
    listed = {layer for block in schedule.blocks for layer in block.layers}

    assert listed.isdisjoint(clamped)
    assert set(schedule.clamped) == set(clamped)


@pytest.mark.parametrize("name, clamped, n_blocks", COLOURING_CASES, ids=COLOURING_IDS)
def test_colouring_block_count(name, clamped, n_blocks):
    schedule = compile_schedule(colouring_model(name), clamped)
    assert len(schedule.blocks) == n_blocks


@pytest.mark.parametrize("name, clamped, n_blocks", COLOURING_CASES, ids=COLOURING_IDS)
def test_colouring_updates_match_blocks(name, clamped, n_blocks):
    model = colouring_model(name)
    schedule = compile_schedule(model, clamped)
    edges = _edge_set(model)

    for block in schedule.blocks:
        assert tuple(update.name for update in block.updates) == block.layers
        for update in block.updates:
            read = {neighbour for neighbour, _, _ in update.inputs}
            expected = {other for edge in edges if update.name in edge for other in edge if other != update.name}
            assert read == expected, f"layer {update.name!r} reads {read}, its neighbours are {expected}"


@pytest.mark.parametrize("name, clamped, n_blocks", COLOURING_CASES, ids=COLOURING_IDS)
def test_colouring_first_block_nearest_anchor(name, clamped, n_blocks):
    # The anchor is the clamped layers, or the visible layers when nothing is clamped.
    model = colouring_model(name)
    schedule = compile_schedule(model, clamped)
    anchor = list(clamped) or list(model.graph.visible)
    distance = _distances(model, anchor)
    candidates = [layer for layer in schedule.free if layer not in anchor]

    nearest = min(distance[layer] for layer in candidates)
    first = schedule.blocks[0].layers
    assert any(distance.get(layer) == nearest for layer in first if layer not in anchor)


def test_schedule_rbm_updates_hidden_first():
    assert [block.layers for block in compile_schedule(colouring_model("rbm")).blocks] == [("h",), ("v",)]


def test_model_schedule_is_cached_per_layer_set():
    model = colouring_model("drm")
    assert model.schedule(("x", "y")) is model.schedule(["y", "x"])
    assert model.schedule("x") is model.schedule(("x",))


# Explicit blocks and invalid arguments ------------------------------------------------


def test_explicit_blocks_accepted_in_order():
    model = colouring_model("dbm")
    schedule = compile_schedule(model, blocks=[["h1", "h3"], ["v", "h2"]])
    assert [block.layers for block in schedule.blocks] == [("h1", "h3"), ("v", "h2")]


def test_explicit_singleton_blocks_accepted():
    model = colouring_model("skip")
    schedule = compile_schedule(model, ["x"], blocks=[["y"], ["h2"], ["h1"]])
    assert [block.layers for block in schedule.blocks] == [("y",), ("h2",), ("h1",)]


def test_explicit_blocks_reject_adjacent_pair():
    model = colouring_model("dbm")
    with pytest.raises(ValueError) as error:
        compile_schedule(model, blocks=[["v", "h1"], ["h2"], ["h3"]])
    assert "'v'" in str(error.value)
    assert "'h1'" in str(error.value)


def test_explicit_blocks_reject_adjacent_skip_pair():
    model = colouring_model("skip")
    with pytest.raises(ValueError) as error:
        compile_schedule(model, blocks=[["x", "h2"], ["h1", "y"]])
    assert "'x'" in str(error.value)
    assert "'h2'" in str(error.value)


def test_explicit_blocks_reject_missing_layer():
    model = colouring_model("dbm")
    with pytest.raises(ValueError) as error:
        compile_schedule(model, blocks=[["h1", "h3"], ["v"]])
    assert "h2" in str(error.value)


def test_explicit_blocks_reject_repeated_layer():
    model = colouring_model("dbm")
    with pytest.raises(ValueError, match="exactly once"):
        compile_schedule(model, blocks=[["h1", "h3"], ["v", "h2", "h3"]])


def test_explicit_blocks_reject_clamped_layer():
    model = colouring_model("dbm")
    with pytest.raises(ValueError, match="exactly once"):
        compile_schedule(model, ["v"], blocks=[["h1", "h3"], ["v", "h2"]])


def test_explicit_blocks_reject_unknown_layer():
    model = colouring_model("dbm")
    with pytest.raises(ValueError, match="'h9'"):
        compile_schedule(model, blocks=[["h1", "h3"], ["v", "h2", "h9"]])


def test_compile_rejects_unknown_clamped_layer():
    model = colouring_model("drm")
    with pytest.raises(ValueError, match="'z'"):
        compile_schedule(model, ["x", "z"])


def test_compile_rejects_all_layers_clamped():
    model = colouring_model("rbm")
    with pytest.raises(ValueError, match="every layer is clamped"):
        compile_schedule(model, ["v", "h"])


# Exact block Gibbs -------------------------------------------------------------------

# Chains per run, sweeps before the first sample, samples per chain and sweeps between
# samples. Exact iid draws of the same number (480k) would have an expected total
# variation of about 0.002-0.008 for the 16-256 joint states below. Samples 5 sweeps
# apart behave as independent draws: with these seeds the Gibbs TV of every case came
# within about 0.001 of that expectation.
N_CHAINS = 60_000
BURN_IN = 40
N_SAMPLES = 8
SPACING = 5
# A correct sampler lands well under this tolerance. A dropped neighbour moves the
# exact distribution by more than 0.05 (test_gibbs_tolerance_detects_dropped_edge).
TV_TOLERANCE = 0.02
DETECTABLE_TV = 0.05


def exact_model(name: str, seed: int = 11) -> EnergyModel:
    """A small float64 model, 7 to 8 discrete units, with weights of std 1 and biases of std 0.5."""
    generator = torch.Generator().manual_seed(seed)
    options = dict(init_std=1.0, generator=generator, dtype=DTYPE)
    if name == "rbm":
        model = rbm(4, 3, hidden_units="spin", **options)
    elif name == "dbm":
        model = dbm([3, 3, 2], **options)
    elif name == "drm":
        model = drm(2, (2, 2), 3, y_units="softmax", **options)
    elif name == "skip":
        graph = Graph()
        graph.add_layer("x", 2, visible=True)
        graph.add_layer("h1", 2)
        graph.add_layer("h2", 2)
        graph.add_layer("y", 2, visible=True)
        for edge in [("x", "h1"), ("h1", "h2"), ("h2", "y"), ("x", "h2")]:
            graph.add_edge(*edge)
        model = EnergyModel(graph, **options)
    else:
        raise KeyError(name)
    with torch.no_grad():
        for bias in model.biases.values():
            bias.copy_(torch.randn(bias.shape, generator=generator, dtype=DTYPE) * 0.5)
    return model


# (model, values of the clamped layers, edge dropped by the negative control)
EXACT_CASES = [
    ("rbm", {}, "v-h"),
    ("rbm", {"h": [1.0, -1.0, 1.0]}, "v-h"),
    ("dbm", {}, "h1-h2"),
    ("dbm", {"v": [1.0, 0.0, 1.0]}, "h1-h2"),
    ("drm", {}, "h2-y"),
    ("drm", {"y": [0.0, 1.0, 0.0]}, "h2-y"),
    ("skip", {}, "x-h2"),
    ("skip", {"y": [1.0, 0.0]}, "x-h2"),
]
EXACT_IDS = [f"{name}|{','.join(clamped) or 'none'}" for name, clamped, _ in EXACT_CASES]


def layer_codes(family: str, size: int, values: np.ndarray) -> np.ndarray:
    """Index of each row of ``values`` among the oracle's states of one layer, or -1 for an invalid row."""
    states = layer_states(family, size)
    match = np.all(values[:, None, :] == states[None, :, :], axis=2)
    return np.where(match.any(axis=1), match.argmax(axis=1), -1)


def joint_codes(model: EnergyModel, state) -> np.ndarray:
    """Index of each joint state in :class:`JointTable` order (first layer most significant), or -1 if invalid."""
    codes, valid = None, None
    for name in model.graph.layer_names:
        layer = model.graph[name]
        values = np.asarray(state[name].detach().numpy() if torch.is_tensor(state[name]) else state[name])
        layer_code = layer_codes(layer.units.name, layer.size, values)
        n_states = len(layer_states(layer.units.name, layer.size))
        codes = layer_code if codes is None else codes * n_states + layer_code
        valid = layer_code >= 0 if valid is None else valid & (layer_code >= 0)
    return np.where(valid, codes, -1)


def exact_distribution(model: EnergyModel, clamped_values) -> np.ndarray:
    """Exact joint probabilities, conditioned on the clamped values by masking the table."""
    table = JointTable(model)
    probs = np.exp(table.log_p)
    for name, value in clamped_values.items():
        probs = np.where(np.all(table.states[name] == np.asarray(value), axis=1), probs, 0.0)
    return probs / probs.sum()


def expected_iid_tv(probs: np.ndarray, n_draws: int) -> float:
    """Expected total variation of the histogram of ``n_draws`` exact iid draws.

    Uses the normal approximation E|p_hat - p| = sqrt(2 p (1 - p) / (pi n)) per state.
    """
    return 0.5 * float(np.sum(np.sqrt(2 * probs * (1 - probs) / (np.pi * n_draws))))


def run_block_gibbs(schedule: Schedule, clamped_values, seed: int) -> np.ndarray:
    """Joint codes of ``N_SAMPLES`` spaced samples from each of ``N_CHAINS`` chains started uniformly at random."""
    generator = torch.Generator().manual_seed(seed)
    model = schedule.model
    state = {name: torch.tensor(value, dtype=DTYPE).repeat(N_CHAINS, 1) for name, value in clamped_values.items()}
    for name in schedule.free:
        layer = model.graph[name]
        state[name] = layer.units.sample(torch.zeros(N_CHAINS, layer.size, dtype=DTYPE), generator)

    state = schedule.gibbs(state, BURN_IN, generator=generator)
    codes = []
    for _ in range(N_SAMPLES):
        state = schedule.gibbs(state, SPACING, generator=generator)
        codes.append(joint_codes(model, state))
    return np.concatenate(codes)


@pytest.mark.parametrize("name", ["rbm", "dbm", "drm", "skip"])
def test_joint_codes_follow_table_order(name):
    model = exact_model(name)
    table = JointTable(model)
    assert np.array_equal(joint_codes(model, table.states), np.arange(len(table.energy)))


@pytest.mark.parametrize("name, clamped_values, dropped_edge", EXACT_CASES, ids=EXACT_IDS)
def test_gibbs_matches_exact(name, clamped_values, dropped_edge):
    model = exact_model(name)
    schedule = compile_schedule(model, tuple(clamped_values))
    probs = exact_distribution(model, clamped_values)

    with torch.no_grad():
        codes = run_block_gibbs(schedule, clamped_values, seed=100)
    assert (codes >= 0).all(), "a sample is not a valid joint state"

    # The samples are compared with the exact distribution over every joint state.
    empirical = np.bincount(codes, minlength=len(probs)) / len(codes)
    assert total_variation(empirical, probs) < TV_TOLERANCE


def test_gibbs_explicit_blocks_match_exact():
    # Another valid grouping (one layer per block) has the same stationary distribution.
    model = exact_model("dbm")
    schedule = compile_schedule(model, blocks=[["h2"], ["v"], ["h1"]])
    probs = exact_distribution(model, {})

    with torch.no_grad():
        codes = run_block_gibbs(schedule, {}, seed=101)
    empirical = np.bincount(codes, minlength=len(probs)) / len(codes)
    assert total_variation(empirical, probs) < TV_TOLERANCE


@pytest.mark.parametrize("name, clamped_values, dropped_edge", EXACT_CASES, ids=EXACT_IDS)
def test_gibbs_tolerance_above_sampling_noise(name, clamped_values, dropped_edge):
    # Treating the spaced samples as independent, exact iid sampling would reach
    # less than half the tolerance, so a correct sampler passes with margin.
    probs = exact_distribution(exact_model(name), clamped_values)
    assert expected_iid_tv(probs, N_CHAINS * N_SAMPLES) < TV_TOLERANCE / 2


@pytest.mark.parametrize("name, clamped_values, dropped_edge", EXACT_CASES, ids=EXACT_IDS)
def test_gibbs_tolerance_detects_dropped_edge(name, clamped_values, dropped_edge):
    # A sampler that ignored one neighbour would sample the model without that edge,
    # whose exact distribution is more than DETECTABLE_TV away, so the tolerance catches it.
    model = exact_model(name)
    broken = exact_model(name)
    with torch.no_grad():
        broken.weights[dropped_edge].zero_()

    distance = total_variation(exact_distribution(model, clamped_values), exact_distribution(broken, clamped_values))
    assert distance > DETECTABLE_TV


def test_gibbs_missing_input_fails_tolerance():
    # End-to-end negative control: the skip graph's schedule with h2 no longer reading
    # x samples far from the exact distribution, so the TV check above can fail.
    model = exact_model("skip")
    honest = compile_schedule(model)
    blocks = []
    for block in honest.blocks:
        updates = []
        for update in block.updates:
            inputs = tuple(entry for entry in update.inputs if not (update.name == "h2" and entry[0] == "x"))
            updates.append(LayerUpdate(update.name, update.units, inputs))
        blocks.append(Block(block.layers, tuple(updates)))
    broken = Schedule(model, honest.clamped, tuple(blocks))
    probs = exact_distribution(model, {})

    with torch.no_grad():
        codes = run_block_gibbs(broken, {}, seed=102)
    empirical = np.bincount(codes, minlength=len(probs)) / len(codes)
    assert total_variation(empirical, probs) > DETECTABLE_TV


# Gibbs details ----------------------------------------------------------------------------


def layer_input(model: EnergyModel, name: str, state) -> torch.Tensor:
    """Bias of ``name`` plus every neighbour's value times the weight, read from the declared edges."""
    total = model.biases[name]
    for a, b in model.graph.edges:
        if b == name:
            total = total + state[a] @ model.weights[f"{a}-{b}"]
        elif a == name:
            total = total + state[b] @ model.weights[f"{a}-{b}"].t()
    return total


def conditional_mean(model: EnergyModel, name: str, state) -> torch.Tensor:
    return MEAN_OF_INPUT[model.graph[name].units.name](layer_input(model, name, state))


def random_state(model: EnergyModel, names, batch: int, generator: torch.Generator):
    state = {}
    for name in names:
        layer = model.graph[name]
        state[name] = layer.units.sample(torch.zeros(batch, layer.size, dtype=DTYPE), generator)
    return state


def test_gibbs_rbm_means_given_returned_hidden(generator):
    # From v alone the sweep draws h, then v, so the v means condition on the returned h.
    model = exact_model("rbm")
    v0 = random_state(model, ["v"], 64, generator)["v"]
    with torch.no_grad():
        state, means = model.schedule().gibbs({"v": v0}, 3, generator=generator, return_means=True)

        expected = torch.sigmoid(model.biases["v"] + state["h"] @ model.weights["v-h"].t())
    assert torch.allclose(means["v"], expected, rtol=0, atol=1e-12)


def test_gibbs_rbm_hidden_means_given_start(generator):
    # One sweep: the h means condition on the starting v.
    model = exact_model("rbm")
    v0 = random_state(model, ["v"], 64, generator)["v"]
    with torch.no_grad():
        _, means = model.schedule().gibbs({"v": v0}, 1, generator=generator, return_means=True)

        expected = torch.tanh(model.biases["h"] + v0 @ model.weights["v-h"])
    assert torch.allclose(means["h"], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["drm", "skip"])
def test_gibbs_last_block_means_given_returned_state(name, generator):
    model = exact_model(name)
    schedule = model.schedule()
    start = random_state(model, model.graph.layer_names, 64, generator)
    with torch.no_grad():
        state, means = schedule.gibbs(start, 4, generator=generator, return_means=True)

        for layer in schedule.blocks[-1].layers:
            expected = conditional_mean(model, layer, state)
            assert torch.allclose(means[layer], expected, rtol=0, atol=1e-12), layer


@pytest.mark.parametrize("name", ["drm", "skip"])
def test_gibbs_first_block_means_given_start(name, generator):
    model = exact_model(name)
    schedule = model.schedule()
    start = random_state(model, model.graph.layer_names, 64, generator)
    with torch.no_grad():
        _, means = schedule.gibbs(start, 1, generator=generator, return_means=True)

        for layer in schedule.blocks[0].layers:
            expected = conditional_mean(model, layer, start)
            assert torch.allclose(means[layer], expected, rtol=0, atol=1e-12), layer


def test_gibbs_means_cover_free_layers(generator):
    model = exact_model("drm")
    schedule = model.schedule("y")
    start = random_state(model, model.graph.layer_names, 8, generator)
    with torch.no_grad():
        _, means = schedule.gibbs(start, 2, generator=generator, return_means=True)
    assert set(means) == set(schedule.free)


def test_gibbs_rbm_from_visible_only(generator):
    model = exact_model("rbm")
    v0 = random_state(model, ["v"], 16, generator)["v"]
    with torch.no_grad():
        state = model.schedule().gibbs({"v": v0}, 1, generator=generator)
    assert state["h"].shape == (16, 3)


def test_gibbs_rejects_missing_first_read_layer(generator):
    # Started from h alone, the first block (h) reads v, which has no value.
    model = exact_model("rbm")
    h0 = random_state(model, ["h"], 16, generator)["h"]
    with pytest.raises(ValueError, match="'v'"):
        model.schedule().gibbs({"h": h0}, 1, generator=generator)


def test_gibbs_rejects_missing_neighbour_of_first_block(generator):
    # With v clamped the DBM updates h1 first, and h1 reads h2.
    model = exact_model("dbm")
    v = random_state(model, ["v"], 16, generator)["v"]
    with pytest.raises(ValueError, match="'h2'"):
        model.schedule("v").gibbs({"v": v}, 1, generator=generator)


def test_gibbs_rejects_missing_clamped_layer(generator):
    model = exact_model("drm")
    start = random_state(model, ["h1", "h2", "y"], 8, generator)
    with pytest.raises(ValueError, match="'x'"):
        model.schedule("x").gibbs(start, 1, generator=generator)


def test_gibbs_rejects_zero_steps(generator):
    model = exact_model("rbm")
    v0 = random_state(model, ["v"], 4, generator)["v"]
    with pytest.raises(ValueError, match="steps"):
        model.schedule().gibbs({"v": v0}, 0, generator=generator)


def test_gibbs_keeps_clamped_layers(generator):
    model = exact_model("drm")
    start = random_state(model, model.graph.layer_names, 32, generator)
    x, y = start["x"].clone(), start["y"].clone()
    with torch.no_grad():
        state = model.schedule(("x", "y")).gibbs(start, 5, generator=generator)
    assert torch.equal(state["x"], x)
    assert torch.equal(state["y"], y)


def test_gibbs_leaves_input_state_unchanged(generator):
    model = exact_model("dbm")
    start = random_state(model, model.graph.layer_names, 32, generator)
    before = {name: tensor.clone() for name, tensor in start.items()}
    with torch.no_grad():
        model.schedule().gibbs(start, 3, generator=generator)
    for name in before:
        assert torch.equal(start[name], before[name]), name


def test_gibbs_same_seed_identical():
    model = exact_model("skip")
    start = random_state(model, model.graph.layer_names, 32, torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = model.schedule().gibbs(start, 3, generator=torch.Generator().manual_seed(5))
        second = model.schedule().gibbs(start, 3, generator=torch.Generator().manual_seed(5))
        other = model.schedule().gibbs(start, 3, generator=torch.Generator().manual_seed(6))
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert any(not torch.equal(first[name], other[name]) for name in first)


# Mean field ---------------------------------------------------------------------------


def mean_field_model(name: str) -> tuple[EnergyModel, str]:
    """A float64 model with weights of std 1 and biases of std 0.5, and the layer to clamp."""
    generator = torch.Generator().manual_seed(3)
    options = dict(init_std=1.0, generator=generator, dtype=DTYPE)
    if name == "dbm":
        model, clamped = dbm([5, 4, 3], **options), "v"
    elif name == "drm":
        model, clamped = drm(5, (4, 3), 3, y_units="softmax", **options), "x"
    elif name == "multimodal":
        graph = Graph()
        graph.add_layer("v1", 4, visible=True)
        graph.add_layer("v2", 3, "spin", visible=True)
        graph.add_layer("h1", 3)
        graph.add_layer("h2", 3)
        graph.add_layer("top", 2)
        for edge in [("v1", "h1"), ("v2", "h2"), ("h1", "top"), ("h2", "top")]:
            graph.add_edge(*edge)
        model, clamped = EnergyModel(graph, **options), "v1"
    else:
        raise KeyError(name)
    with torch.no_grad():
        for bias in model.biases.values():
            bias.copy_(torch.randn(bias.shape, generator=generator, dtype=DTYPE) * 0.5)
    return model, clamped


def binary_data(model: EnergyModel, name: str, batch: int, seed: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, model.graph[name].size, generator=generator, dtype=DTYPE) < 0.5).to(DTYPE)


def consistency_residual(model: EnergyModel, means, free) -> float:
    """Largest violation of mu_l = mean_l(b_l + sum_m mu_m W_ml) over the free layers."""
    return max(float((means[name] - conditional_mean(model, name, means)).abs().max()) for name in free)


@pytest.mark.parametrize("name", ["dbm", "drm", "multimodal"])
def test_mean_field_reaches_fixed_point(name):
    model, clamped = mean_field_model(name)
    schedule = model.schedule(clamped)
    with torch.no_grad():
        means = schedule.mean_field({clamped: binary_data(model, clamped, 16)}, 200)
        residual = consistency_residual(model, means, schedule.free)
    assert residual < 1e-6


@pytest.mark.parametrize("name", ["dbm", "drm", "multimodal"])
def test_mean_field_one_step_not_fixed_point(name):
    # Control for the test above: one sweep from zeros is far from self-consistent.
    model, clamped = mean_field_model(name)
    schedule = model.schedule(clamped)
    with torch.no_grad():
        means = schedule.mean_field({clamped: binary_data(model, clamped, 16)}, 1)
        residual = consistency_residual(model, means, schedule.free)
    assert residual > 1e-3


def test_mean_field_keeps_clamped_layer():
    model, clamped = mean_field_model("drm")
    x = binary_data(model, clamped, 16)
    with torch.no_grad():
        means = model.schedule(clamped).mean_field({clamped: x}, 5)
    assert torch.equal(means["x"], x)


def test_mean_field_zeros_init_steps_zero():
    model, clamped = mean_field_model("drm")
    x = binary_data(model, clamped, 6)
    means = model.schedule(clamped).mean_field({clamped: x}, 0, init="zeros")

    assert set(means) == set(model.graph.layer_names)
    for name in ("h1", "h2", "y"):
        assert means[name].shape == (6, model.graph[name].size), name
        assert torch.equal(means[name], torch.zeros(6, model.graph[name].size, dtype=DTYPE)), name


def test_mean_field_bottom_up_steps_zero_chain():
    # Each layer reads only the layer below it: x -> h1 -> h2 -> y.
    model, clamped = mean_field_model("drm")
    x = binary_data(model, clamped, 6)
    with torch.no_grad():
        means = model.schedule(clamped).mean_field({clamped: x}, 0, init="bottom_up")

        h1 = torch.sigmoid(model.biases["h1"] + x @ model.weights["x-h1"])
        h2 = torch.sigmoid(model.biases["h2"] + h1 @ model.weights["h1-h2"])
        y = torch.softmax(model.biases["y"] + h2 @ model.weights["h2-y"], dim=-1)
    assert torch.allclose(means["h1"], h1, rtol=0, atol=1e-12)
    assert torch.allclose(means["h2"], h2, rtol=0, atol=1e-12)
    assert torch.allclose(means["y"], y, rtol=0, atol=1e-12)


def test_mean_field_bottom_up_steps_zero_multimodal():
    # With both visible layers clamped, top is reached last and reads h1 and h2.
    model, _ = mean_field_model("multimodal")
    v1 = binary_data(model, "v1", 6)
    v2 = binary_data(model, "v2", 6, seed=5) * 2 - 1
    with torch.no_grad():
        means = model.schedule(("v1", "v2")).mean_field({"v1": v1, "v2": v2}, 0, init="bottom_up")

        h1 = torch.sigmoid(model.biases["h1"] + v1 @ model.weights["v1-h1"])
        h2 = torch.sigmoid(model.biases["h2"] + v2 @ model.weights["v2-h2"])
        top = torch.sigmoid(model.biases["top"] + h1 @ model.weights["h1-top"] + h2 @ model.weights["h2-top"])
    assert torch.allclose(means["h1"], h1, rtol=0, atol=1e-12)
    assert torch.allclose(means["h2"], h2, rtol=0, atol=1e-12)
    assert torch.allclose(means["top"], top, rtol=0, atol=1e-12)


def test_mean_field_dict_init_broadcasts():
    model, clamped = mean_field_model("drm")
    x = binary_data(model, clamped, 6)
    h2 = torch.tensor([0.2, 0.7, 0.4], dtype=DTYPE)
    means = model.schedule(clamped).mean_field({clamped: x}, 0, init={"h2": h2})

    assert means["h2"].shape == (6, 3)
    assert torch.equal(means["h2"], h2.expand(6, 3))
    assert torch.equal(means["h1"], torch.zeros(6, 4, dtype=DTYPE))
    assert torch.equal(means["y"], torch.zeros(6, 3, dtype=DTYPE))


def test_mean_field_dict_init_per_row():
    model, clamped = mean_field_model("drm")
    x = binary_data(model, clamped, 6)
    h1 = torch.rand(6, 4, generator=torch.Generator().manual_seed(8), dtype=DTYPE)
    means = model.schedule(clamped).mean_field({clamped: x}, 0, init={"h1": h1})
    assert torch.equal(means["h1"], h1)


def test_mean_field_state_overrides_dict_init():
    model, clamped = mean_field_model("drm")
    x = binary_data(model, clamped, 6)
    given = torch.full((6, 4), 0.25, dtype=DTYPE)
    means = model.schedule(clamped).mean_field(
        {clamped: x, "h1": given}, 0, init={"h1": torch.full((4,), 0.75, dtype=DTYPE)}
    )
    assert torch.equal(means["h1"], given)


def test_mean_field_first_block_damping():
    # The first block reads only the initial values, so the damped update is the
    # blend (1 - d) * undamped + d * initial.
    model, clamped = mean_field_model("dbm")
    v = binary_data(model, clamped, 8)
    initial = {"h1": torch.full((4,), 0.3, dtype=DTYPE), "h2": torch.full((3,), 0.6, dtype=DTYPE)}
    schedule = model.schedule(clamped)
    assert schedule.blocks[0].layers == ("h1",)

    damping = 0.4
    with torch.no_grad():
        undamped = schedule.mean_field({clamped: v}, 1, init=initial)
        damped = schedule.mean_field({clamped: v}, 1, init=initial, damping=damping)
    expected = (1 - damping) * undamped["h1"] + damping * initial["h1"]
    assert torch.allclose(damped["h1"], expected, rtol=0, atol=1e-12)


def test_mean_field_damping_sequential_blocks():
    # Later blocks read the damped values of earlier blocks in the same sweep.
    model, clamped = mean_field_model("dbm")
    v = binary_data(model, clamped, 8)
    h1_start = torch.full((8, 4), 0.3, dtype=DTYPE)
    h2_start = torch.full((8, 3), 0.6, dtype=DTYPE)
    damping = 0.4
    with torch.no_grad():
        means = model.schedule(clamped).mean_field(
            {clamped: v}, 1, init={"h1": h1_start, "h2": h2_start}, damping=damping
        )

        h1_new = torch.sigmoid(model.biases["h1"] + v @ model.weights["v-h1"] + h2_start @ model.weights["h1-h2"].t())
        h1 = (1 - damping) * h1_new + damping * h1_start
        h2_new = torch.sigmoid(model.biases["h2"] + h1 @ model.weights["h1-h2"])
        h2 = (1 - damping) * h2_new + damping * h2_start
    assert torch.allclose(means["h1"], h1, rtol=0, atol=1e-12)
    assert torch.allclose(means["h2"], h2, rtol=0, atol=1e-12)


def test_mean_field_damped_reaches_same_fixed_point():
    model, clamped = mean_field_model("drm")
    schedule = model.schedule(clamped)
    x = binary_data(model, clamped, 16)
    with torch.no_grad():
        means = schedule.mean_field({clamped: x}, 200, damping=0.5)
        residual = consistency_residual(model, means, schedule.free)
    assert residual < 1e-6


def test_mean_field_rejects_unknown_init():
    model, clamped = mean_field_model("drm")
    with pytest.raises(ValueError, match="init"):
        model.schedule(clamped).mean_field({clamped: binary_data(model, clamped, 2)}, 1, init="top_down")


def test_mean_field_rejects_init_for_clamped_layer():
    model, clamped = mean_field_model("drm")
    x = binary_data(model, clamped, 2)
    with pytest.raises(ValueError, match="'x'"):
        model.schedule(clamped).mean_field({clamped: x}, 1, init={"x": torch.zeros(5, dtype=DTYPE)})


@pytest.mark.parametrize("steps", [-1, 1.5, True])
def test_mean_field_rejects_bad_steps(steps):
    model, clamped = mean_field_model("drm")
    with pytest.raises(ValueError, match="steps"):
        model.schedule(clamped).mean_field({clamped: binary_data(model, clamped, 2)}, steps)


@pytest.mark.parametrize("damping", [-0.1, 1.0, 1.5])
def test_mean_field_rejects_damping_outside_unit_interval(damping):
    model, clamped = mean_field_model("drm")
    with pytest.raises(ValueError, match="damping"):
        model.schedule(clamped).mean_field({clamped: binary_data(model, clamped, 2)}, 1, damping=damping)


def test_mean_field_rejects_init_batch_mismatch():
    model, clamped = mean_field_model("drm")
    x = binary_data(model, clamped, 4)
    with pytest.raises(ValueError, match="'h2'"):
        model.schedule(clamped).mean_field({clamped: x}, 0, init={"h2": torch.full((7, 3), 0.5, dtype=DTYPE)})


def test_mean_field_rejects_init_wrong_width():
    model, clamped = mean_field_model("drm")
    x = binary_data(model, clamped, 4)
    with pytest.raises(ValueError, match="'h2'"):
        model.schedule(clamped).mean_field({clamped: x}, 0, init={"h2": torch.full((5,), 0.5, dtype=DTYPE)})


@pytest.mark.cuda
def test_schedules_run_on_cuda():
    model = drm(x=12, hidden=(8, 6), y=3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.bernoulli(torch.full((5, 12), 0.5), generator=torch.Generator().manual_seed(1)).double()
    on_cpu = model.schedule(("x",)).mean_field({"x": x}, 10)

    model = model.to("cuda")
    on_gpu = model.schedule(("x",)).mean_field({"x": x.cuda()}, 10)
    samples = model.schedule().gibbs({name: tensor.cuda() for name, tensor in on_cpu.items()}, 3, generator=torch.Generator("cuda").manual_seed(2))

    for name, tensor in on_cpu.items():
        torch.testing.assert_close(on_gpu[name].cpu(), tensor)
    assert all(tensor.device.type == "cuda" for tensor in samples.values())


@pytest.mark.parametrize("hidden, expected", [((5,), 1), ((4, 3), 2), ((4, 3, 2), 2), ((4, 3, 2, 2), 3)])
def test_sweeps_to_reach_is_first_sweep_that_informs(hidden, expected):
    model = drm(6, hidden, 3, y_units="softmax", init_std=1.0, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    schedule = model.schedule(("x",))
    x = torch.rand(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    assert schedule.sweeps_to_reach("x", "y") == expected

    with torch.no_grad():
        informed = schedule.mean_field({"x": x}, expected)["y"]
        assert bool((informed.std(dim=0) > 0).any()), "y must depend on x after the returned number of sweeps"
        if expected > 1:
            uninformed = schedule.mean_field({"x": x}, expected - 1)["y"]
            assert bool((uninformed.std(dim=0) == 0).all()), "y must not depend on x one sweep earlier"


def test_sweeps_to_reach_none_through_clamped_layer():
    # y's only neighbour is clamped, so no sweep carries x to it.
    model = drm(6, (4,), 3)

    assert model.schedule(("x", "h1")).sweeps_to_reach("x", "y") is None
