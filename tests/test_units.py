import math

import pytest
import torch
from scipy import integrate

from ebmgraph import EnergyModel, Gaussian, Graph, GraphError, UnitFamily, get_unit_family, register_unit_family, unit_family_names
from ebmgraph.units import Bernoulli, Spin
from ebmgraph.estimators import log_partition
from helpers import set_parameters

DISCRETE = ["bernoulli", "spin", "softmax"]


@pytest.mark.parametrize("name", DISCRETE)
def test_log_partition_matches_state_sum(name):
    family = get_unit_family(name)
    layer_input = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    states = family.enumerate_states(4, dtype=torch.float64)

    brute = torch.logsumexp(layer_input @ family.statistic(states).T - family.self_energy(states), dim=1)

    torch.testing.assert_close(family.log_partition(layer_input), brute, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", DISCRETE)
def test_mean_matches_state_average(name):
    family = get_unit_family(name)
    layer_input = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    states = family.enumerate_states(4, dtype=torch.float64)
    weights = torch.softmax(layer_input @ states.T, dim=1)

    torch.testing.assert_close(family.mean(layer_input), weights @ states, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", DISCRETE + ["gaussian"])
def test_sample_mean_matches_mean(name):
    family = get_unit_family(name)
    generator = torch.Generator().manual_seed(2)
    layer_input = torch.tensor([[-1.5, -0.2, 0.4, 2.0]], dtype=torch.float64).expand(200_000, 4)

    samples = family.sample(layer_input, generator)

    # Standard error of a mean of 2e5 draws is below 0.0023 for every family here; 0.01 is over 4 of them.
    torch.testing.assert_close(samples.mean(dim=0), family.mean(layer_input[:1])[0], rtol=0, atol=0.01)


@pytest.mark.parametrize("name", DISCRETE)
def test_samples_lie_in_support(name):
    family = get_unit_family(name)
    samples = family.sample(torch.randn(1000, 5, generator=torch.Generator().manual_seed(3)), torch.Generator().manual_seed(4))
    family.check_support(samples, layer="test", allow_means=False)


def test_softmax_sample_is_one_hot_with_right_frequencies():
    family = get_unit_family("softmax")
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    samples = family.sample(probs.log().expand(100_000, 4), torch.Generator().manual_seed(5))

    assert torch.equal(samples.sum(dim=1), torch.ones(100_000, dtype=torch.float64))
    # Standard error of each frequency is at most 0.0016; the tolerance is 4 of them.
    torch.testing.assert_close(samples.mean(dim=0), probs, rtol=0, atol=0.0065)


def test_sampling_reproducible_with_generator():
    family = get_unit_family("bernoulli")
    layer_input = torch.zeros(10, 10)
    first = family.sample(layer_input, torch.Generator().manual_seed(6))
    second = family.sample(layer_input, torch.Generator().manual_seed(6))
    assert torch.equal(first, second)


def test_spin_single_unit_probabilities():
    spin = get_unit_family("spin")
    bernoulli = get_unit_family("bernoulli")
    bias = torch.tensor([[0.5]], dtype=torch.float64)

    p_spin = (spin.mean(bias) + 1) / 2
    p_binary = bernoulli.mean(bias)

    assert p_spin.item() == pytest.approx(0.731059, abs=1e-6)
    assert p_binary.item() == pytest.approx(0.622459, abs=1e-6)


def two_unit_model(units: str, biases, coupling: float) -> EnergyModel:
    graph = Graph()
    graph.add_layer("s1", 1, units, visible=True)
    graph.add_layer("s2", 1, units)
    graph.add_edge("s1", "s2")
    model = EnergyModel(graph, dtype=torch.float64)
    return set_parameters(model, {"s1": [biases[0]], "s2": [biases[1]]}, {"s1-s2": [[coupling]]})


def test_two_spin_model_exact_values():
    model = two_unit_model("spin", (0.2, -0.1), 0.5)
    states = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    log_z = log_partition(model).item()
    log_p = -model.energy({"s1": states[:, :1], "s2": states[:, 1:]}) - log_z
    p = log_p.exp()

    assert log_z == pytest.approx(1.522136, abs=1e-6)
    assert p[2:].sum().item() == pytest.approx(0.576353, abs=1e-6)
    assert (p[0] + p[3]).item() == pytest.approx(0.723252, abs=1e-6)
    conditional = model.conditional("s1", {"s2": torch.tensor([[1.0]], dtype=torch.float64)}).mean
    assert ((conditional + 1) / 2).item() == pytest.approx(0.802184, abs=1e-6)


def test_spin_to_binary_conversion_offsets_log_z():
    h, coupling = (0.2, -0.1), 0.5
    spin = two_unit_model("spin", h, coupling)
    # x = (s + 1) / 2 gives b = 2h - 2J, w = 4J and log Z_spin = log Z_binary + J - sum(h).
    binary = two_unit_model("bernoulli", (2 * h[0] - 2 * coupling, 2 * h[1] - 2 * coupling), 4 * coupling)

    offset = log_partition(spin).item() - log_partition(binary).item()

    assert log_partition(binary).item() == pytest.approx(1.122136, abs=1e-6)
    assert offset == pytest.approx(0.4, abs=1e-9)


def test_gaussian_single_unit_log_partition():
    # log of the integral of exp(-(s - u)^2 / (2 var) + phi s) for u = 0.2, var = 0.25, phi = 0.7.
    u, variance, phi = 0.2, 0.25, 0.7
    family = Gaussian(std=math.sqrt(variance))
    layer_input = torch.tensor([[u + phi * variance]], dtype=torch.float64)

    value = family.log_partition(layer_input).item() - u**2 / (2 * variance)

    assert value == pytest.approx(0.427041, abs=1e-6)
    quadrature, _ = integrate.quad(lambda s: math.exp(-((s - u) ** 2) / (2 * variance) + phi * s), -20, 20)
    assert value == pytest.approx(math.log(quadrature), abs=1e-9)


def gaussian_bernoulli() -> EnergyModel:
    graph = Graph()
    graph.add_layer("v", 2, Gaussian(std=(1.0, 0.5)), visible=True)
    graph.add_layer("h", 2)
    graph.add_edge("v", "h")
    model = EnergyModel(graph, dtype=torch.float64)
    return set_parameters(model, {"v": [0.2, -0.3], "h": [0.1, -0.2]}, {"v-h": [[0.4, -0.3], [0.2, 0.5]]})


def test_gaussian_bernoulli_matches_v_over_variance_form():
    model = gaussian_bernoulli()
    v = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    # Energies here omit the constant sum(b^2 / (2 sigma^2)) = 0.2 of the centred form.
    constant = 0.2**2 / 2 + 0.3**2 / (2 * 0.25)

    assert model.free_energy({"v": v}).item() + constant == pytest.approx(0.459832, abs=1e-6)
    assert log_partition(model).item() - constant == pytest.approx(2.506250, abs=1e-6)
    p_h = model.conditional("h", {"v": v}).mean[0].tolist()
    assert p_h == pytest.approx([0.377541, 0.087066], abs=1e-6)
    # The v / sigma form (Hinton's guide) would give p(h | v) = [0.475021, 0.205870].
    assert p_h[0] != pytest.approx(0.475021, abs=1e-3)


def test_gaussian_bernoulli_log_z_matches_quadrature():
    model = gaussian_bernoulli()

    def density(a, b):
        v = torch.tensor([[a, b]], dtype=torch.float64)
        return math.exp(-model.free_energy({"v": v}).item())

    total, _ = integrate.dblquad(density, -8, 8, -8, 8, epsabs=1e-11)

    assert log_partition(model).item() == pytest.approx(math.log(total), abs=1e-7)


def test_gaussian_conditional_samples_have_scale():
    model = gaussian_bernoulli()
    h = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(100_000, 2)
    conditional = model.conditional("v", {"h": h})

    samples = conditional.sample(torch.Generator().manual_seed(7))

    assert conditional.mean[0].tolist() == pytest.approx([0.6, -0.1], abs=1e-12)
    torch.testing.assert_close(samples.mean(dim=0), torch.tensor([0.6, -0.1], dtype=torch.float64), rtol=0, atol=0.015)
    torch.testing.assert_close(samples.std(dim=0), torch.tensor([1.0, 0.5], dtype=torch.float64), rtol=0, atol=0.01)


def test_gaussian_rejects_bad_std():
    with pytest.raises(ValueError, match="positive"):
        Gaussian(std=0.0)
    with pytest.raises(ValueError, match="positive"):
        Gaussian(std=(1.0, -2.0))


def test_gaussian_std_length_must_match_layer():
    graph = Graph()
    with pytest.raises(GraphError, match="layer 'v': Gaussian family has 2 standard deviations for 3 units"):
        graph.add_layer("v", 3, Gaussian(std=(1.0, 0.5)), visible=True)


def test_gaussian_rejects_string_std():
    with pytest.raises(TypeError, match="number or a sequence"):
        Gaussian(std="12")


def test_conditional_log_prob_rejects_invalid_state():
    model = gaussian_bernoulli()
    conditional = model.conditional("h", {"v": torch.zeros(1, 2, dtype=torch.float64)})
    with pytest.raises(ValueError, match="\\{0, 1\\}"):
        conditional.log_prob(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    with pytest.raises(ValueError, match="shape \\(1, 2\\)"):
        conditional.log_prob(torch.zeros(1, 3, dtype=torch.float64))


class NamelessFamily(UnitFamily):
    def mean(self, input):
        return torch.sigmoid(input)

    def sample(self, input, generator=None):
        return torch.bernoulli(torch.sigmoid(input), generator=generator)

    def log_partition(self, input):
        return torch.nn.functional.softplus(input).sum(dim=-1)

    def check_support(self, state, *, layer, allow_means):
        pass


def test_register_rejects_mismatched_name():
    with pytest.raises(ValueError, match="reports name 'abstract'; set the class attribute name = 'nameless'"):
        register_unit_family("nameless", NamelessFamily)


@pytest.mark.parametrize("name, low", [("bernoulli", 0.0), ("spin", -1.0)])
def test_support_errors_name_layer_and_position(name, low):
    family = get_unit_family(name)
    state = torch.tensor([[low, 1.0, 1.0], [1.0, 1.0, 0.5]])
    with pytest.raises(ValueError, match="layer 'v'.*row 1, unit 2"):
        family.check_support(state, layer="v", allow_means=False)


def test_softmax_support_requires_one_hot():
    family = get_unit_family("softmax")
    with pytest.raises(ValueError, match="layer 'y'.*row 0 sums to 2"):
        family.check_support(torch.tensor([[1.0, 1.0, 0.0]]), layer="y", allow_means=False)
    with pytest.raises(ValueError, match="sum to 1"):
        family.check_support(torch.tensor([[0.3, 0.3, 0.3]]), layer="y", allow_means=True)
    family.check_support(torch.tensor([[0.2, 0.3, 0.5]]), layer="y", allow_means=True)


class Ternary(UnitFamily):
    """Units with states {-1, 0, 1}, a family defined outside the library."""

    name = "ternary"

    def mean(self, input):
        weights = torch.stack([-input, torch.zeros_like(input), input], dim=-1).softmax(dim=-1)
        return weights[..., 2] - weights[..., 0]

    def sample(self, input, generator=None):
        weights = torch.stack([-input, torch.zeros_like(input), input], dim=-1).softmax(dim=-1)
        draws = torch.multinomial(weights.reshape(-1, 3), 1, generator=generator).reshape(input.shape)
        return (draws - 1).to(input.dtype)

    def log_partition(self, input):
        return torch.logsumexp(torch.stack([-input, torch.zeros_like(input), input], dim=-1), dim=-1).sum(dim=-1)

    def check_support(self, state, *, layer, allow_means):
        if not bool(((state == -1) | (state == 0) | (state == 1)).all()) and not allow_means:
            raise ValueError(f"layer {layer!r}: expected values in {{-1, 0, 1}}")

    def enumerate_states(self, size, *, dtype, device=None):
        grids = torch.meshgrid(*[torch.tensor([-1.0, 0.0, 1.0], dtype=dtype)] * size, indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], dim=1)

    def n_states(self, size):
        return 3.0**size


def test_registered_family_works_in_engine():
    register_unit_family("ternary", Ternary, replace=True)
    assert "ternary" in unit_family_names()
    graph = Graph()
    graph.add_layer("v", 2, "ternary", visible=True)
    graph.add_layer("h", 2)
    graph.add_edge("v", "h")
    model = EnergyModel(graph, init_std=1.0, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    states_v = Ternary().enumerate_states(2, dtype=torch.float64)
    states_h = get_unit_family("bernoulli").enumerate_states(2, dtype=torch.float64)
    v = states_v.repeat_interleave(4, dim=0)
    h = states_h.repeat(9, 1)
    brute = torch.logsumexp(-model.energy({"v": v, "h": h}), dim=0)

    torch.testing.assert_close(log_partition(model), brute, rtol=0, atol=1e-12)


def test_register_rejects_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        register_unit_family("bernoulli", Ternary)


def test_unknown_family_lists_registered():
    with pytest.raises(ValueError, match="unknown unit family 'binary'.*bernoulli"):
        get_unit_family("binary")


@pytest.mark.parametrize("family, values", [(Bernoulli(), {0.0, 1.0}), (Spin(), {-1.0, 1.0})])
def test_sample_transposed_input(family, values):
    # A transposed input of 24,000 units takes the bulk sampler, which works on flat views.
    input = torch.randn(200, 120, generator=torch.Generator().manual_seed(0)).t()

    state = family.sample(input, torch.Generator().manual_seed(1))

    assert state.shape == (120, 200)
    assert set(state.unique().tolist()) == values
