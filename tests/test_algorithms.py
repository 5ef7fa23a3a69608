import pytest
import torch

from ebmgraph import drm, rbm
from ebmgraph.estimators import log_marginal
from ebmgraph.learning import CD, PCD, MeanFieldCD, MeanFieldPCD, Trainer, TrainingConfig, make_estimator, sufficient_statistics
from helpers import SMALL_GRAPHS, random_model, reference_rbm
from oracles import JointTable


def test_cd1_matches_sampled_reconstruction_variant():
    model = reference_rbm()
    v0 = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64).expand(100_000, 3)

    data_state, model_state = CD(1).phases(model, {"v": v0}, torch.Generator().manual_seed(0))
    negative = sufficient_statistics(model, model_state)["weights.v-h"].reshape(-1)
    positive = sufficient_statistics(model, data_state)["weights.v-h"].reshape(-1)

    # Tolerance 0.008 from the case: about 5 standard errors of a mean over 1e5 runs.
    sampled = torch.tensor([0.215215, 0.269133, 0.383626, 0.499148, 0.375474, 0.721104], dtype=torch.float64)
    mean_field = torch.tensor([0.190908, 0.309976, 0.307717, 0.510573, 0.392804, 0.697712], dtype=torch.float64)
    torch.testing.assert_close(negative, sampled, rtol=0, atol=0.008)
    assert (negative - mean_field).abs().max().item() > 0.05
    expected_update = torch.tensor([0.105606, 0.533051, -0.383626, -0.499148, -0.054652, 0.081080], dtype=torch.float64)
    torch.testing.assert_close(positive - negative, expected_update, rtol=0, atol=0.008)


def exact_model_statistics(model):
    table = JointTable(model)
    p = torch.from_numpy(table.log_p).exp()
    state = {name: torch.from_numpy(values) for name, values in table.states.items()}
    weighted = {name: tensor * p[:, None] * len(p) for name, tensor in state.items()}
    # sufficient_statistics averages over rows; weighting one side by n * p turns that into an expectation.
    stats = {}
    for key in sufficient_statistics(model, state):
        kind, _, rest = key.partition(".")
        if kind == "biases":
            stats[key] = (p[:, None] * state[rest]).sum(dim=0)
        else:
            a, b = rest.split("-")
            stats[key] = weighted[a].T @ state[b] / len(p)
    return stats


@pytest.mark.parametrize("name", ["rbm", "dbm", "skip_spin"])
def test_pcd_model_term_is_unbiased_at_equilibrium(name):
    model = random_model(*SMALL_GRAPHS[name], seed=21, std=0.7)
    generator = torch.Generator().manual_seed(22)
    estimator = PCD(k=1, n_chains=20_000)
    estimator.model_term(model, 0, generator)
    for _ in range(50):
        estimator.chains.advance(1, generator=generator)

    runs = torch.stack([torch.cat([v.reshape(-1) for v in sufficient_statistics(model, estimator.model_term(model, 0, generator)).values()]) for _ in range(10)])

    exact = torch.cat([v.reshape(-1) for v in exact_model_statistics(model).values()])
    # Chains are correlated across the 10 calls, so the spread of one call's mean bounds the error:
    # per-statistic standard deviation over chains / sqrt(20000) is at most 0.5 / 141 = 0.0036.
    torch.testing.assert_close(runs.mean(dim=0), exact, rtol=0, atol=5 * 0.0036)


def test_pcd_gradient_expectation_matches_exact_rbm_gradient():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=23, std=0.7)
    generator = torch.Generator().manual_seed(24)
    data = torch.bernoulli(torch.full((8, 5), 0.5), generator=generator).double()
    estimator = PCD(k=1, n_chains=20_000)
    estimator.model_term(model, 0, generator)
    estimator.chains.advance(50, generator=generator)

    estimates = []
    for _ in range(10):
        data_state, model_state = estimator.phases(model, {"v": data}, generator)
        positive, negative = sufficient_statistics(model, data_state), sufficient_statistics(model, model_state)
        estimates.append(torch.cat([(positive[k] - negative[k]).reshape(-1) for k in positive]))
    estimate = torch.stack(estimates).mean(dim=0)

    positive = sufficient_statistics(model, {"v": data, "h": model.conditional("h", {"v": data}).mean})
    exact_negative = exact_model_statistics(model)
    exact = torch.cat([(positive[k] - exact_negative[k]).reshape(-1) for k in positive])
    # Same bound as the model-term test: 5 standard errors of a mean over 20000 chains.
    torch.testing.assert_close(estimate, exact, rtol=0, atol=5 * 0.0036)


def exact_log_likelihood(model, data):
    return log_marginal(model, data).mean().item()


@pytest.mark.parametrize("estimator", [CD(1), PCD(1, n_chains=100), MeanFieldPCD(1, n_chains=100, mean_field_steps=5)])
def test_training_raises_exact_log_likelihood(estimator):
    generator = torch.Generator().manual_seed(31)
    model = rbm(6, 4, init_std=0.3, generator=generator, dtype=torch.float64)
    prototypes = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float64)
    data = {"v": prototypes.repeat(20, 1)}
    before = exact_log_likelihood(model, data)

    Trainer(model, estimator, TrainingConfig(epochs=30, batch_size=10, learning_rate=0.1), generator=generator).fit(data)

    after = exact_log_likelihood(model, data)
    # Uniform start is -6 log 2 = -4.16 nats; the two prototypes alone would give -log 2 = -0.69.
    assert after > before + 1.5


def test_mean_field_cd_raises_drm_log_likelihood():
    generator = torch.Generator().manual_seed(32)
    model = drm(x=6, hidden=(4, 3), y=2, init_std=0.1, generator=generator, dtype=torch.float64)
    x = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float64).repeat(20, 1)
    y = torch.tensor([[1, 0], [0, 1]], dtype=torch.float64).repeat(20, 1)
    data = {"x": x, "y": y}
    before = exact_log_likelihood(model, data)

    Trainer(model, MeanFieldCD(10), TrainingConfig(epochs=30, batch_size=10, learning_rate=0.1), generator=generator).fit(data)

    after = exact_log_likelihood(model, data)
    assert after > before + 1.5
    assert torch.equal(model.classify(x), y.argmax(dim=1))


def test_mean_field_cd_reconstructs_from_hidden_means():
    generator = torch.Generator().manual_seed(33)
    model = drm(x=5, hidden=(4,), y=3, init_std=1.0, generator=generator, dtype=torch.float64)
    x = torch.bernoulli(torch.full((4, 5), 0.5), generator=generator).double()
    y = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]

    data_state, model_state = MeanFieldCD(3, reconstruction="mean").phases(model, {"x": x, "y": y}, None)

    # One hidden layer: its mean given (x, y) is exact, and the reconstruction is its conditional mean.
    h = model.conditional("h1", {"x": x, "y": y}).mean
    x_bar = model.conditional("x", {"h1": h}).mean
    y_bar = model.conditional("y", {"h1": h}).mean
    torch.testing.assert_close(data_state["h1"], h, rtol=0, atol=1e-12)
    torch.testing.assert_close(model_state["x"], x_bar, rtol=0, atol=1e-12)
    torch.testing.assert_close(model_state["h1"], model.conditional("h1", {"x": x_bar, "y": y_bar}).mean, rtol=0, atol=1e-12)


def test_make_estimator_by_name():
    assert isinstance(make_estimator("mf-cd", steps=10), MeanFieldCD)
    assert make_estimator("cd", k=3).k == 3
    with pytest.raises(ValueError, match="unknown training algorithm 'cd2'"):
        make_estimator("cd2")


@pytest.mark.parametrize("factory", [lambda: CD(0), lambda: PCD(k=-1), lambda: MeanFieldCD(0), lambda: MeanFieldCD(reconstruction="mode")])
def test_estimators_reject_bad_arguments(factory):
    with pytest.raises(ValueError):
        factory()


def test_pcd_chains_persist_and_restore():
    model = reference_rbm()
    generator = torch.Generator().manual_seed(34)
    estimator = PCD(1, n_chains=7)
    batch = {"v": torch.ones(3, 3, dtype=torch.float64)}
    estimator.phases(model, batch, generator)
    saved = estimator.state_dict()

    restored = PCD(1, n_chains=7)
    restored.load_state_dict(saved)
    restored.phases(model, batch, torch.Generator().manual_seed(1))
    expected = PCD(1, n_chains=7)
    expected.load_state_dict(saved)
    expected.phases(model, batch, torch.Generator().manual_seed(1))

    assert saved["chains"]["state"]["v"].shape == (7, 3)
    assert torch.equal(restored.chains.state["v"], expected.chains.state["v"])
    assert restored.chains.n_sweeps == 2
