import copy
import itertools
import math

import numpy as np
import pytest
import torch

from ebmgraph import EnergyModel, Graph, rbm
from ebmgraph.estimators import ais_log_partition, default_betas, fit_base_biases, log_marginal, log_partition
from ebmgraph.units import Bernoulli, Gaussian, Softmax, Spin
from helpers import SMALL_GRAPHS, random_model, set_parameters
from oracles import JointTable

# 1,500 temperatures: 100 in [0, 0.5], 400 in [0.5, 0.9], 1,000 in [0.9, 1].
SHORT_BETAS = default_betas(((0.5, 100), (0.9, 400), (1.0, 1000)))
# 3,000 temperatures, for the multimodal model.
LONG_BETAS = default_betas(((0.5, 200), (0.9, 800), (1.0, 2000)))



def ais(model, data=None, **options):
    options.setdefault("generator", torch.Generator().manual_seed(0))
    options.setdefault("base", None)
    return ais_log_partition(model, data, **options)


def visible_modes(model: EnergyModel, n_visible: int) -> torch.Tensor:
    """Probabilities of the local maxima of p(v) under single-unit flips, largest first."""
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n_visible)), dtype=model.dtype)
    log_p = log_marginal(model, {"v": states})
    index = torch.arange(len(states))
    is_mode = torch.ones(len(states), dtype=torch.bool)
    for unit in range(n_visible):
        is_mode &= log_p > log_p[index ^ (1 << unit)]
    return log_p[is_mode].exp().sort(descending=True).values


# Schedules ----------------------------------------------------------------------


def test_default_betas_three_segments():
    betas = default_betas()

    assert betas.dtype == torch.float64
    assert len(betas) == 14_501
    assert betas[0].item() == 0.0
    assert betas[-1].item() == 1.0
    assert bool((betas[1:] > betas[:-1]).all())
    assert int(((betas > 0) & (betas <= 0.5)).sum()) == 500
    assert int(((betas > 0.5) & (betas <= 0.9)).sum()) == 4_000
    assert int((betas > 0.9).sum()) == 10_000


@pytest.mark.parametrize(
    "segments, message",
    [
        (((0.5, 10), (0.9, 10)), "the last segment must end at 1, got 0.9"),
        (((0.5, 10), (0.4, 10), (1.0, 5)), r"segments\[1\]: end must be in \(0.5, 1\], got 0.4"),
        (((1.0, 0),), r"segments\[0\]: steps must be a positive int, got 0"),
    ],
)
def test_default_betas_rejects_bad_segments(segments, message):
    with pytest.raises(ValueError, match=message):
        default_betas(segments)


# Accuracy against exact log Z -------------------------------------------------------


@pytest.mark.parametrize("summed_out", ["auto", ()], ids=["summed", "joint"])
@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_ais_matches_exact_log_z(name, summed_out):
    # Weight std 2; 200 runs over SHORT_BETAS (1,500 temperatures).
    model = random_model(*SMALL_GRAPHS[name], seed=3, std=2.0)
    exact = log_partition(model).item()

    result = ais(model, betas=SHORT_BETAS, n_runs=200, summed_out=summed_out)

    assert result.log_z == pytest.approx(exact, abs=0.1)


@pytest.mark.parametrize("summed_out", ["auto", ()], ids=["summed", "joint"])
def test_ais_gaussian_visible_layer(summed_out):
    # Gaussian v (std 0.8) and binary h with weight std 1, log Z about 10; 200 runs over LONG_BETAS.
    layers = [("v", 4, Gaussian(0.8), True), ("h", 5, "bernoulli", False)]
    model = random_model(layers, [("v", "h")], seed=3, std=1.0)
    exact = log_partition(model).item()

    result = ais(model, betas=LONG_BETAS, n_runs=200, summed_out=summed_out)

    assert result.log_z == pytest.approx(exact, abs=0.1)


def test_ais_multimodal_rbm():
    # A 10 x 8 RBM with weight std 2 whose p(v) has two separated modes; 200 runs over LONG_BETAS.
    model = random_model([("v", 10, "bernoulli", True), ("h", 8, "bernoulli", False)], [("v", "h")], seed=2, std=2.0)
    modes = visible_modes(model, 10)
    assert len(modes) >= 2
    assert modes[1].item() > 0.05

    result = ais(model, betas=LONG_BETAS, n_runs=200)

    assert result.log_z == pytest.approx(log_partition(model).item(), abs=0.1)


def test_ais_plain_importance_sampling():
    # betas = [0, 1] is importance sampling from the base with no transition; 100,000 runs.
    model = random_model(*SMALL_GRAPHS["dbm"], seed=4, std=0.5)

    result = ais(model, betas=[0.0, 1.0], n_runs=100_000)

    assert result.log_z == pytest.approx(log_partition(model).item(), abs=0.02)


def test_ais_interval_contains_exact():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=6, std=1.0)
    exact = log_partition(model).item()

    result = ais(model, betas=SHORT_BETAS, n_runs=100)

    assert result.log_z_low < result.log_z < result.log_z_high
    assert result.log_z_low <= exact <= result.log_z_high


def test_ais_single_run_has_infinite_interval():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=6, std=1.0)

    result = ais(model, betas=[0.0, 0.5, 1.0], n_runs=1)

    assert result.log_z_low == -math.inf
    assert result.log_z_high == math.inf
    assert math.isfinite(result.log_z)


# Base model -----------------------------------------------------------------------


def test_fit_base_biases_inverts_smoothed_means():
    graph = Graph()
    graph.add_layer("a", 3, "bernoulli", visible=True)
    graph.add_layer("b", 3, "spin", visible=True)
    graph.add_layer("c", 4, "softmax", visible=True)
    graph.add_layer("d", 2, Gaussian(0.5), visible=True)
    graph.add_layer("h", 2)
    for name in "abcd":
        graph.add_edge(name, "h")
    model = EnergyModel(graph, dtype=torch.float64)
    data = {
        "a": torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64),
        "b": torch.tensor([[1.0, -1.0, -1.0], [1.0, 1.0, -1.0]], dtype=torch.float64),
        "c": torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64),
        "d": torch.tensor([[0.5, -2.0], [1.5, 0.0]], dtype=torch.float64),
    }

    biases = fit_base_biases(model, data)

    assert sorted(biases) == ["a", "b", "c", "d"]
    # One pseudo-count per state: (count + 1) / (rows + states).
    torch.testing.assert_close(Bernoulli().mean(biases["a"]), torch.tensor([3 / 4, 2 / 4, 1 / 4], dtype=torch.float64))
    torch.testing.assert_close(Spin().mean(biases["b"]), 2 * torch.tensor([3 / 4, 2 / 4, 1 / 4], dtype=torch.float64) - 1)
    torch.testing.assert_close(Softmax().mean(biases["c"][None])[0], torch.tensor([3, 1, 1, 1], dtype=torch.float64) / 6)
    torch.testing.assert_close(biases["d"], torch.tensor([1.0, -1.0], dtype=torch.float64))


def test_ais_base_from_data():
    # Base biases fitted to 500 exact samples of p(v); 200 runs over SHORT_BETAS.
    model = random_model(*SMALL_GRAPHS["drm_softmax"], seed=8, std=2.0)
    table = JointTable(model)
    rows = np.random.default_rng(0).choice(len(table.log_p), size=500, p=np.exp(table.log_p))
    data = {name: torch.from_numpy(table.states[name][rows]) for name in model.graph.visible}

    result = ais(model, data, base="data", betas=SHORT_BETAS, n_runs=200)

    assert result.log_z == pytest.approx(table.log_z, abs=0.1)
    assert result.log_z_base != pytest.approx(ais(model, betas=[0.0, 1.0], n_runs=1).log_z_base)


def test_ais_base_from_dict():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=9, std=1.0)
    base = {"h": model.biases["h"].detach().clone()}

    result = ais(model, base=base, betas=SHORT_BETAS, n_runs=100)

    assert result.log_z == pytest.approx(log_partition(model).item(), abs=0.1)


# Layers summed out ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [("rbm", ("v",)), ("dbm", ("v", "h2")), ("drm_softmax", ("x", "h2")), ("skip_spin", ("x",)), ("three_visible", ("a", "b", "c"))],
)
def test_ais_sums_out_largest_block(name, expected):
    model = random_model(*SMALL_GRAPHS[name], seed=1)

    result = ais(model, betas=[0.0, 1.0], n_runs=2)

    assert result.summed_out == expected


def test_ais_explicit_summed_out():
    model = random_model(*SMALL_GRAPHS["dbm"], seed=10, std=2.0)

    result = ais(model, betas=SHORT_BETAS, n_runs=200, summed_out=["h1"])

    assert result.summed_out == ("h1",)
    assert result.log_z == pytest.approx(log_partition(model).item(), abs=0.1)


# Numerics --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rbm", "skip_spin"])
def test_ais_float32_matches_float64(name):
    model64 = random_model(*SMALL_GRAPHS[name], seed=12, std=2.0)
    model32 = copy.deepcopy(model64).float()
    exact = log_partition(model64).item()

    result32 = ais(model32, betas=SHORT_BETAS, n_runs=200)
    result64 = ais(model64, betas=SHORT_BETAS, n_runs=200)

    assert result32.log_weights.dtype == torch.float64
    assert result32.log_z == pytest.approx(exact, abs=0.1)
    assert result64.log_z == pytest.approx(exact, abs=0.1)


def test_ais_large_log_weights_float32():
    # Biases of 40 make log w about 800, far past exp overflow in float32 (about 88).
    model = rbm(20, 3, dtype=torch.float64)
    set_parameters(model, {"v": [40.0] * 20, "h": [1.0, -1.0, 0.5]}, {"v-h": [[0.3, -0.2, 0.1]] * 20})
    exact = log_partition(model).item()
    model.float()

    result = ais(model, betas=SHORT_BETAS, n_runs=50)

    assert exact > 800
    assert torch.isfinite(result.log_weights).all()
    assert math.isfinite(result.log_z_low)
    assert math.isfinite(result.log_z_high)
    assert result.log_z == pytest.approx(exact, abs=0.1)


def test_ais_same_generator_seed_same_result():
    model = random_model(*SMALL_GRAPHS["dbm"], seed=13, std=1.0)

    betas = default_betas(((0.5, 10), (0.9, 40), (1.0, 100)))

    first = ais(model, betas=betas, n_runs=20)
    again = ais(model, betas=betas, n_runs=20)
    other = ais(model, betas=betas, n_runs=20, generator=torch.Generator().manual_seed(1))

    assert torch.equal(first.log_weights, again.log_weights)
    assert not torch.equal(first.log_weights, other.log_weights)


def test_ais_result_fields():
    model = random_model(*SMALL_GRAPHS["dbm"], seed=14, std=1.0)

    result = ais(model, betas=SHORT_BETAS, n_runs=30)

    assert result.n_runs == 30
    assert result.log_weights.shape == (30,)
    assert torch.equal(result.betas, SHORT_BETAS)
    assert 1.0 <= result.effective_sample_size <= 30.0
    expected = result.log_z_base + torch.logsumexp(result.log_weights, 0).item() - math.log(30)
    assert result.log_z == pytest.approx(expected, abs=1e-9)
    # The all-zero base of 10 binary units: log Z_A = 10 log 2.
    assert result.log_z_base == pytest.approx(10 * math.log(2), abs=1e-12)


def test_ais_progress_bar(capsys):
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)

    ais(model, betas=[0.0, 0.5, 1.0], n_runs=2, progress=True)

    assert "AIS" in capsys.readouterr().err


# Argument checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "betas, message",
    [
        ([0.0, 0.5, 0.4, 1.0], r"betas must be strictly increasing, but betas\[2\] = 0.4 follows betas\[1\] = 0.5"),
        ([0.0, 0.5, 0.5, 1.0], r"strictly increasing, but betas\[2\] = 0.5 follows betas\[1\] = 0.5"),
        ([0.1, 0.5, 1.0], r"betas must start at 0 \(the base model\), got betas\[0\] = 0.1"),
        ([0.0, 0.5, 0.9], r"betas must end at 1 \(the model\), got betas\[-1\] = 0.9"),
        ([0.0, float("nan"), 1.0], r"betas must be finite, got betas\[1\] = nan"),
        ([1.0], r"at least 2 inverse temperatures, got shape \(1,\)"),
        ([[0.0, 1.0]], r"1-D sequence of at least 2 inverse temperatures, got shape \(1, 2\)"),
    ],
)
def test_ais_rejects_bad_betas(betas, message):
    with pytest.raises(ValueError, match=message):
        ais(random_model(*SMALL_GRAPHS["rbm"], seed=1), betas=betas)


@pytest.mark.parametrize("n_runs", [0, -3, 2.5, True])
def test_ais_rejects_bad_n_runs(n_runs):
    with pytest.raises(ValueError, match=f"n_runs must be an int >= 1, got {n_runs!r}"):
        ais(random_model(*SMALL_GRAPHS["rbm"], seed=1), n_runs=n_runs)


def test_ais_rejects_data_of_wrong_width():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)
    data = {"v": torch.zeros(8, 4, dtype=torch.float64)}

    with pytest.raises(ValueError, match=r"layer 'v': expected shape \(batch, 5\), got \(8, 4\)"):
        ais(model, data, base="data")


def test_ais_rejects_hidden_layer_in_data():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)
    data = {"h": torch.zeros(8, 4, dtype=torch.float64)}

    with pytest.raises(ValueError, match=r"data gives layer 'h', which is hidden.*\['v'\]"):
        ais(model, data, base="data")


def test_ais_rejects_data_with_other_base():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)
    data = {"v": torch.zeros(8, 5, dtype=torch.float64)}

    with pytest.raises(ValueError, match="data is used only to fit the base model with base='data', but base is None"):
        ais(model, data, base=None)


def test_ais_rejects_data_base_without_data():
    with pytest.raises(ValueError, match="base='data' fits the base model to data, but data is None"):
        ais(random_model(*SMALL_GRAPHS["rbm"], seed=1), base="data")


@pytest.mark.parametrize(
    "base, message",
    [
        ({"v": torch.zeros(4, dtype=torch.float64)}, r"base bias of layer 'v' must be a tensor of shape \(5,\), got \(4,\)"),
        ({"v": [0.0] * 5}, r"base bias of layer 'v' must be a tensor of shape \(5,\), got list"),
        ({"w": torch.zeros(5, dtype=torch.float64)}, r"base gives unknown layer 'w'"),
        ({"v": torch.full((5,), float("inf"), dtype=torch.float64)}, "base bias of layer 'v' contains NaN or infinite values"),
        ("uniform", "base must be 'data', None or a dict of biases per layer, got 'uniform'"),
    ],
)
def test_ais_rejects_bad_base(base, message):
    with pytest.raises(ValueError, match=message):
        ais(random_model(*SMALL_GRAPHS["rbm"], seed=1), base=base)


@pytest.mark.parametrize(
    "summed_out, message",
    [
        (["v", "h1"], "summed_out layers 'v' and 'h1' are joined by an edge"),
        (["h3"], "summed_out names unknown layer 'h3'"),
    ],
)
def test_ais_rejects_bad_summed_out(summed_out, message):
    with pytest.raises(ValueError, match=message):
        ais(random_model(*SMALL_GRAPHS["dbm"], seed=1), summed_out=summed_out)


def test_ais_requires_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got NoneType"):
        ais(random_model(*SMALL_GRAPHS["rbm"], seed=1), generator=None)
