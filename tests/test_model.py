import numpy as np
import pytest
import torch

from ebmgraph import EnergyModel, Graph, drm, rbm
from helpers import SMALL_GRAPHS, random_model, reference_rbm, set_parameters, tiny_dbm
from oracles import JointTable


def as_state(table: JointTable, rows) -> dict:
    return {name: torch.from_numpy(values[rows]) for name, values in table.states.items()}


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_energy_matches_enumeration(name):
    model = random_model(*SMALL_GRAPHS[name], seed=1)
    table = JointTable(model)
    rows = np.arange(len(table.energy))

    energy = model.energy(as_state(table, rows)).detach().numpy()

    np.testing.assert_allclose(energy, table.energy, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_conditional_matches_enumeration(name):
    model = random_model(*SMALL_GRAPHS[name], seed=2)
    table = JointTable(model)
    rng = np.random.default_rng(0)

    for target in model.graph.layer_names:
        neighbours = model.graph.neighbours(target)
        for row in rng.choice(len(table.energy), size=4, replace=False):
            given = {m: table.states[m][row] for m in neighbours}
            exact = table.conditional_mean(target, given)
            state = {m: torch.from_numpy(value[None, :]) for m, value in given.items()}

            mean = model.conditional(target, state).mean.detach().numpy()[0]

            np.testing.assert_allclose(mean, exact, rtol=0, atol=1e-10, err_msg=f"layer {target}")


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_free_energy_matches_enumeration(name):
    model = random_model(*SMALL_GRAPHS[name], seed=3)
    table = JointTable(model)
    graph = model.graph
    # Sum out each layer alone, and the largest independent set found greedily.
    independent = []
    for layer in graph.layer_names:
        if not any(graph.nx.has_edge(layer, other) for other in independent):
            independent.append(layer)
    for summed in [[layer] for layer in graph.layer_names] + [independent]:
        kept = [layer for layer in graph.layer_names if layer not in summed]
        for row in (0, len(table.energy) // 3, len(table.energy) - 1):
            state = {layer: torch.from_numpy(table.states[layer][row : row + 1]) for layer in kept}

            free = model.free_energy(state).item()

            exact = table.free_energy({layer: table.states[layer][row] for layer in kept})
            assert free == pytest.approx(exact, abs=1e-10), f"summed out {summed}"


def test_reference_rbm_conditionals():
    model = reference_rbm()
    v = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    h = torch.tensor([[1.0, 0.0]], dtype=torch.float64)

    p_h = model.conditional("h", {"v": v}).mean[0].tolist()
    p_v = model.conditional("v", {"h": h}).mean[0].tolist()

    assert p_h == pytest.approx([0.320821, 0.802184], abs=1e-6)
    assert p_v == pytest.approx([0.645656, 0.785835, 0.389361], abs=1e-6)
    # The flipped-sign signature sigmoid(-x) would give [0.679179, 0.197816].
    assert p_h[0] != pytest.approx(0.679179, abs=1e-3)


def test_reference_rbm_conditional_from_energy_ratio():
    model = reference_rbm()
    v = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    p_h = model.conditional("h", {"v": v}).mean[0]

    for j in range(2):
        on = torch.zeros(1, 2, dtype=torch.float64)
        on[0, j] = 1.0
        off = torch.zeros(1, 2, dtype=torch.float64)
        # Hidden units are independent given v, so the ratio for unit j alone decides p(h_j = 1 | v).
        ratio = torch.exp(model.energy({"v": v, "h": off}) - model.energy({"v": v, "h": on}))
        assert p_h[j].item() == pytest.approx((ratio / (1 + ratio)).item(), abs=1e-12)


def test_reference_rbm_free_energy():
    model = reference_rbm()
    visible = torch.tensor([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)], dtype=torch.float64)

    free = model.free_energy({"v": visible}).tolist()

    expected = [-1.387092, -3.038765, -2.183317, -3.644206, -1.230635, -2.407288, -2.134795, -3.162545]
    assert free == pytest.approx(expected, abs=1e-6)


def test_hidden_side_free_energy_sums_visible():
    model = reference_rbm()
    hidden = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)

    log_z = torch.logsumexp(-model.free_energy({"h": hidden}), dim=0).item()

    assert log_z == pytest.approx(4.775958, abs=1e-6)


def test_tiny_dbm_middle_conditional_uses_both_neighbours():
    model = tiny_dbm()
    state = {"v": torch.tensor([[1.0, 0.0]], dtype=torch.float64), "h2": torch.tensor([[1.0]], dtype=torch.float64)}

    mean = model.conditional("h1", state).mean[0].tolist()

    assert mean == pytest.approx([0.916827, 0.167982], abs=1e-6)
    # Dropping the top-down input from h2 gives [0.768525, 0.310026].
    assert mean[0] != pytest.approx(0.768525, abs=1e-3)


def test_conditional_rejects_missing_neighbour():
    model = tiny_dbm()
    with pytest.raises(ValueError, match="'h2'"):
        model.conditional("h1", {"v": torch.zeros(1, 2, dtype=torch.float64)})


def test_free_energy_rejects_adjacent_summed_layers():
    model = tiny_dbm()
    with pytest.raises(ValueError, match="'h1' and 'h2'"):
        model.free_energy({"v": torch.zeros(1, 2, dtype=torch.float64)})


def test_free_energy_single_row_keeps_batch_axis():
    model = reference_rbm()
    free = model.free_energy({"v": torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)})
    assert free.shape == (1,)


def test_drm_one_hidden_layer_is_rbm_over_concatenation():
    generator = torch.Generator().manual_seed(5)
    model = drm(x=5, hidden=(4,), y=3, init_std=1.0, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        for bias in model.biases.values():
            bias.normal_(generator=generator)
    joined = rbm(8, 4, init_std=0.0, dtype=torch.float64)
    set_parameters(
        joined,
        {"v": torch.cat([model.biases["x"], model.biases["y"]]).tolist(), "h": model.biases["h1"].tolist()},
        {"v-h": torch.cat([model.weight("x", "h1"), model.weight("y", "h1")]).tolist()},
    )
    x = torch.bernoulli(torch.full((64, 5), 0.5), generator=generator).double()
    y = torch.bernoulli(torch.full((64, 3), 0.5), generator=generator).double()
    h = torch.bernoulli(torch.full((64, 4), 0.5), generator=generator).double()

    drm_energy = model.energy({"x": x, "h1": h, "y": y})
    rbm_energy = joined.energy({"v": torch.cat([x, y], dim=1), "h": h})

    torch.testing.assert_close(drm_energy, rbm_energy, rtol=0, atol=1e-12)


def test_parameters_have_declared_shapes():
    model = drm(x=(28, 28), hidden=(30, 20), y=10)
    assert model.weights["x-h1"].shape == (784, 30)
    assert model.weights["h2-y"].shape == (20, 10)
    assert model.weight("y", "h2").shape == (10, 20)
    assert model.biases["x"].shape == (784,)
    assert model.dtype == torch.float32


def test_state_accepts_layer_shape():
    model = drm(x=(4, 4), hidden=(3,), y=2)
    images = torch.rand(5, 4, 4)

    flat = model.check_state({"x": images})["x"]

    assert flat.shape == (5, 16)


def test_seeded_init_is_reproducible():
    first = rbm(6, 4, generator=torch.Generator().manual_seed(9))
    second = rbm(6, 4, generator=torch.Generator().manual_seed(9))
    assert torch.equal(first.weights["v-h"], second.weights["v-h"])
    assert first.weights["v-h"].std().item() == pytest.approx(0.01, rel=0.6)


def test_to_float64_keeps_results():
    model = reference_rbm(dtype=torch.float32)
    v = torch.tensor([[1.0, 0.0, 1.0]])
    single = model.free_energy({"v": v}).item()

    model = model.to(torch.float64)

    assert model.dtype == torch.float64
    assert model.free_energy({"v": v.double()}).item() == pytest.approx(single, abs=1e-5)
    assert model.schedule(["v"]).model is model


def test_float32_matches_float64():
    model64 = random_model(*SMALL_GRAPHS["dbm"], seed=4)
    model32 = random_model(*SMALL_GRAPHS["dbm"], seed=4).to(torch.float32)
    table = JointTable(model64)
    state = {name: torch.from_numpy(values) for name, values in table.states.items()}

    energy32 = model32.energy({name: tensor.float() for name, tensor in state.items()}).double()

    torch.testing.assert_close(energy32, model64.energy(state), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "state, message",
    [
        ({"v": torch.zeros(2, 4)}, "expected shape \\(batch, 3\\)"),
        ({"v": torch.zeros(2, 3, dtype=torch.float16)}, "expected dtype torch.float32"),
        ({"v": torch.zeros(2, 3, dtype=torch.long)}, "layer 'v'"),
        ({"v": torch.zeros(2, 3), "h": torch.zeros(3, 2)}, "batch size 3"),
        ({"w": torch.zeros(2, 3)}, "unknown layer 'w'"),
        ({"v": torch.tensor([[0.0, float("nan"), 1.0]])}, "NaN or infinite.*row 0, unit 1"),
        ({"v": torch.tensor([[0.0, float("inf"), 1.0]])}, "NaN or infinite"),
        ({"v": torch.tensor([[1.2, 0.0, 1.0]])}, "\\[0, 1\\].*1.2.*row 0, unit 0"),
        ({"v": torch.tensor([[-1.0, 1.0, 1.0]])}, "\\[0, 1\\].*row 0, unit 0"),
        ({"v": [[0.0, 1.0, 1.0]]}, "expected a torch.Tensor"),
    ],
)
def test_check_state_rejects_bad_input(state, message):
    model = rbm(3, 2)
    with pytest.raises((ValueError, TypeError), match=message):
        model.check_state(state)


def test_check_state_sample_mode_rejects_fractions():
    model = rbm(3, 2)
    with pytest.raises(ValueError, match="\\{0, 1\\}"):
        model.check_state({"v": torch.tensor([[0.3, 0.7, 1.0]])}, allow_means=False)
    assert model.check_state({"v": torch.tensor([[0.3, 0.7, 1.0]])})["v"].shape == (1, 3)


def test_energy_requires_every_layer():
    with pytest.raises(ValueError, match="missing layer 'h'"):
        rbm(3, 2).energy({"v": torch.zeros(1, 3)})


def test_model_rejects_integer_dtype():
    graph = Graph()
    graph.add_layer("v", 2, visible=True)
    graph.add_layer("h", 2)
    graph.add_edge("v", "h")
    with pytest.raises(TypeError, match="floating-point"):
        EnergyModel(graph, dtype=torch.int64)


def test_state_dict_round_trip():
    source = rbm(4, 3, generator=torch.Generator().manual_seed(1))
    target = rbm(4, 3)
    target.load_state_dict(source.state_dict())
    assert sorted(source.state_dict()) == ["biases.h", "biases.v", "weights.v-h"]
    assert torch.equal(target.weights["v-h"], source.weights["v-h"])


@pytest.mark.cuda
def test_model_on_cuda_matches_cpu():
    model = reference_rbm()
    v = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    cpu = model.free_energy({"v": v})
    gpu = model.to("cuda").free_energy({"v": v.cuda()})
    torch.testing.assert_close(gpu.cpu(), cpu)
