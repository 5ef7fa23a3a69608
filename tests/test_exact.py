import numpy as np
import pytest
import torch

from ebmgraph import rbm
from ebmgraph.estimators import enumerate_states, enumeration_layers, log_marginal, log_partition
from helpers import SMALL_GRAPHS, random_model, reference_rbm, set_parameters, tiny_dbm
from oracles import JointTable

ALL_VISIBLE = torch.tensor([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)], dtype=torch.float64)


def test_reference_rbm_log_z():
    assert log_partition(reference_rbm()).item() == pytest.approx(4.775958, abs=1e-6)


def test_reference_rbm_log_z_three_routes_agree():
    model = reference_rbm()
    hidden = enumerate_states(model, ["h"])["h"]
    joint = enumerate_states(model, ["v", "h"])

    by_joint = torch.logsumexp(-model.energy(joint), dim=0)
    by_visible = torch.logsumexp(-model.free_energy({"v": ALL_VISIBLE}), dim=0)
    by_hidden = torch.logsumexp(-model.free_energy({"h": hidden}), dim=0)

    assert by_visible.item() == pytest.approx(by_joint.item(), abs=1e-12)
    assert by_hidden.item() == pytest.approx(by_joint.item(), abs=1e-12)


def test_reference_rbm_marginals_and_moments():
    model = reference_rbm()
    p_v = log_marginal(model, {"v": ALL_VISIBLE}).exp()
    p_h_given_v = model.conditional("h", {"v": ALL_VISIBLE}).mean

    expected_p = [0.033747, 0.176014, 0.074822, 0.322468, 0.028859, 0.093605, 0.071278, 0.199207]
    assert p_v.tolist() == pytest.approx(expected_p, abs=1e-6)
    assert (p_v @ ALL_VISIBLE).tolist() == pytest.approx([0.392949, 0.667775, 0.791293], abs=1e-6)
    assert (p_v @ p_h_given_v).tolist() == pytest.approx([0.525955, 0.813818], abs=1e-6)
    moments = torch.einsum("n,ni,nj->ij", p_v, ALL_VISIBLE, p_h_given_v).reshape(-1)
    assert moments.tolist() == pytest.approx([0.238032, 0.281892, 0.429555, 0.546925, 0.385810, 0.704764], abs=1e-6)


def wide_rbm():
    model = rbm(20, 2, dtype=torch.float64)
    weights = [[0.1 * (((2 * i + j) % 7) - 3) for j in range(2)] for i in range(20)]
    biases = [0.05 * ((i % 5) - 2) for i in range(20)]
    return set_parameters(model, {"v": biases, "h": [0.3, -0.2]}, {"v-h": weights})


def test_wide_rbm_enumerates_smaller_layer():
    model = wide_rbm()
    assert enumeration_layers(model) == ("h",)
    # 2^20 visible states would exceed this budget; the 4 hidden states do not.
    assert log_partition(model, max_states=16).item() == pytest.approx(15.310566, abs=1e-6)


def test_too_large_model_is_rejected_with_count():
    model = rbm(40, 30)
    with pytest.raises(ValueError, match="1.074e\\+09 states.*max_states=16777216"):
        log_partition(model)


def test_tiny_dbm_exact_values():
    model = tiny_dbm()

    log_z = log_partition(model).item()
    log_p = log_marginal(model, {"v": torch.tensor([[1.0, 0.0]], dtype=torch.float64)}).item()

    assert enumeration_layers(model) == ("h1",)
    assert log_z == pytest.approx(4.808643, abs=1e-6)
    assert log_p == pytest.approx(-1.642789, abs=1e-6)


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_log_partition_matches_oracle(name):
    model = random_model(*SMALL_GRAPHS[name], seed=11)
    assert log_partition(model).item() == pytest.approx(JointTable(model).log_z, abs=1e-10)


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_log_marginal_of_visible_matches_oracle(name):
    model = random_model(*SMALL_GRAPHS[name], seed=12)
    table = JointTable(model)
    visible = list(model.graph.visible)
    rows, probs = table.marginal(visible)
    offsets = np.cumsum([0] + [model.graph[layer].size for layer in visible])
    observed = {layer: torch.from_numpy(rows[:, offsets[i] : offsets[i + 1]]) for i, layer in enumerate(visible)}

    log_p = log_marginal(model, observed).numpy()

    np.testing.assert_allclose(log_p, np.log(probs), rtol=0, atol=1e-10)


def test_log_marginal_rejects_fractional_state():
    with pytest.raises(ValueError, match="\\{0, 1\\}"):
        log_marginal(reference_rbm(), {"v": torch.tensor([[0.5, 0.0, 1.0]], dtype=torch.float64)})
