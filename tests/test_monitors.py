import numpy as np
import pytest
import torch

from ebmgraph.learning.monitors import pseudo_log_likelihood
from helpers import SMALL_GRAPHS, random_model
from oracles import JointTable


def exact_pll_terms(model, rows: dict, scored: list) -> np.ndarray:
    """``D log p(v_i | v_-i)`` for every row and every scored unit ``i``, by enumeration: shape ``(rows, D)``."""
    visible = list(model.graph.visible)
    states, probs = JointTable(model).marginal(visible)
    probability = {tuple(state): p for state, p in zip(states, probs)}
    offsets = dict(zip(visible, np.cumsum([0] + [model.graph[name].size for name in visible])))
    flips = {"bernoulli": lambda x: 1 - x, "spin": lambda x: -x}
    joined = np.concatenate([rows[name].numpy() for name in visible], axis=1)
    columns = [(offsets[name] + unit, flips[model.graph[name].units.name]) for name in scored for unit in range(model.graph[name].size)]
    terms = np.zeros((len(joined), len(columns)))
    for r, row in enumerate(joined):
        for c, (column, flip) in enumerate(columns):
            other = row.copy()
            other[column] = flip(other[column])
            p, q = probability[tuple(row)], probability[tuple(other)]
            terms[r, c] = len(columns) * np.log(p / (p + q))
    return terms


def repeated_rows(model, n_distinct: int, repeats: int, seed: int) -> dict:
    """``n_distinct`` samples of the visible layers from the exact model, each repeated ``repeats`` times."""
    table = JointTable(model)
    picks = np.random.default_rng(seed).choice(len(table.log_p), size=n_distinct, p=np.exp(table.log_p))
    return {name: torch.from_numpy(np.repeat(table.states[name][picks], repeats, axis=0)) for name in model.graph.visible}


@pytest.mark.parametrize("name, scored", [("rbm", ["v"]), ("three_visible", ["a", "b"])])
def test_pseudo_log_likelihood_matches_enumeration(name, scored):
    # 4 data rows, each scored 5,000 times with a random unit: tolerance 4 standard errors.
    model = random_model(*SMALL_GRAPHS[name], seed=1, std=1.5)
    data = repeated_rows(model, n_distinct=4, repeats=5000, seed=2)
    terms = exact_pll_terms(model, {k: v[::5000] for k, v in data.items()}, scored)
    standard_error = np.sqrt(terms.var(axis=1).mean() / len(terms) / 5000)

    estimate = pseudo_log_likelihood(model, data, generator=torch.Generator().manual_seed(3))

    assert estimate == pytest.approx(terms.mean(), abs=4 * standard_error)
    assert standard_error < 0.05


def test_pseudo_log_likelihood_one_unit_exact():
    # With one visible unit, p(v_1 | v_-1) = p(v_1) and no randomness is left.
    model = random_model([("v", 1, "bernoulli", True), ("h", 3, "bernoulli", False)], [("v", "h")], seed=4, std=2.0)
    data = {"v": torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.float64)}
    log_p = torch.tensor(JointTable(model).marginal(["v"])[1]).log()
    expected = torch.stack([log_p[0], log_p[1], log_p[1]]).mean().item()

    estimate = pseudo_log_likelihood(model, data, generator=torch.Generator().manual_seed(0))

    assert estimate == pytest.approx(expected, abs=1e-12)


def test_pseudo_log_likelihood_same_seed_same_value():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=5, std=1.0)
    data = repeated_rows(model, n_distinct=10, repeats=1, seed=6)

    first = pseudo_log_likelihood(model, data, generator=torch.Generator().manual_seed(7))
    again = pseudo_log_likelihood(model, data, generator=torch.Generator().manual_seed(7))
    other = pseudo_log_likelihood(model, data, generator=torch.Generator().manual_seed(8))

    assert first == again
    assert first != other


def test_pseudo_log_likelihood_float32():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=5, std=1.0)
    data = repeated_rows(model, n_distinct=10, repeats=1, seed=6)
    value64 = pseudo_log_likelihood(model, data, generator=torch.Generator().manual_seed(7))

    model.float()
    value32 = pseudo_log_likelihood(model, {"v": data["v"].float()}, generator=torch.Generator().manual_seed(7))

    assert value32 == pytest.approx(value64, abs=1e-4)


def test_pseudo_log_likelihood_rejects_deep_graph():
    model = random_model(*SMALL_GRAPHS["dbm"], seed=1)

    with pytest.raises(ValueError, match="unobserved layers 'h1' and 'h2' are joined by an edge; use reconstruction_error"):
        pseudo_log_likelihood(model, {"v": torch.zeros(2, 4, dtype=torch.float64)}, generator=torch.Generator())


def test_pseudo_log_likelihood_rejects_non_binary_layer():
    model = random_model(*SMALL_GRAPHS["three_visible"], seed=1)
    data = repeated_rows(model, n_distinct=2, repeats=1, seed=0)

    with pytest.raises(ValueError, match="layer 'c' has softmax units; only bernoulli and spin layers can be scored"):
        pseudo_log_likelihood(model, data, generator=torch.Generator(), layers=["a", "c"])


def test_pseudo_log_likelihood_rejects_layer_missing_from_data():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)
    data = {"v": torch.zeros(2, 5, dtype=torch.float64)}

    with pytest.raises(ValueError, match=r"layers names 'h', which data lacks; data has \['v'\]"):
        pseudo_log_likelihood(model, data, generator=torch.Generator(), layers=["h"])


def test_pseudo_log_likelihood_rejects_fractional_data():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)

    with pytest.raises(ValueError, match=r"layer 'v': expected values in \{0, 1\}"):
        pseudo_log_likelihood(model, {"v": torch.full((2, 5), 0.5, dtype=torch.float64)}, generator=torch.Generator())


def test_pseudo_log_likelihood_rejects_data_of_wrong_width():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=1)

    with pytest.raises(ValueError, match=r"layer 'v': expected shape \(batch, 5\), got \(2, 6\)"):
        pseudo_log_likelihood(model, {"v": torch.zeros(2, 6, dtype=torch.float64)}, generator=torch.Generator())
