import pytest
import torch

from ebmgraph.learning import PCD
from ebmgraph.learning.joint import JointPass, joint_pass_for
from helpers import SMALL_GRAPHS, random_model

# Graphs whose hidden layers form one block given the data and whose data layers form the other.
TWO_BLOCK_GRAPHS = {
    "rbm": SMALL_GRAPHS["rbm"],
    "three_visible": SMALL_GRAPHS["three_visible"],
    "gaussian_visible": ([("v", 4, "gaussian", True), ("h", 3, "bernoulli", False)], [("v", "h")]),
    "two_hidden": (
        [("v", 5, "bernoulli", True), ("h1", 3, "bernoulli", False), ("h2", 2, "spin", False)],
        [("v", "h1"), ("v", "h2")],
    ),
}


def batch_for(model, rows: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: model.graph[name].units.sample(torch.randn(rows, model.graph[name].size, dtype=model.dtype, generator=generator), generator)
        for name in model.graph.visible
    }


def started_estimators(model, k: int, n_chains: int) -> tuple[PCD, PCD]:
    """Two PCD estimators whose chains start from the same state, a few sweeps from their first draw."""
    first = PCD(k, n_chains=n_chains)
    first.model_term(model, 0, torch.Generator().manual_seed(1))
    first.chains.advance(3, generator=torch.Generator().manual_seed(2))
    second = PCD(k, n_chains=n_chains)
    second.load_state_dict(first.state_dict())
    return first, second


@pytest.mark.parametrize("name", sorted(TWO_BLOCK_GRAPHS))
@pytest.mark.parametrize(("k", "n_chains"), [(1, 6), (3, 9)])
def test_joint_phases_match_separate_terms(name, k, n_chains):
    model = random_model(*TWO_BLOCK_GRAPHS[name], seed=3)
    batch = batch_for(model, 6, seed=4)
    joint, separate = started_estimators(model, k, n_chains)

    data_state, model_state = joint.phases(model, batch, torch.Generator().manual_seed(5))
    expected_data = separate.data_term(model, batch, separate.mean_field_steps)
    expected_model = separate.model_term(model, 6, torch.Generator().manual_seed(5))

    # The stacked layout is the sign that the joint pass ran.
    visible = model.graph.visible[0]
    assert data_state[visible].untyped_storage().data_ptr() == model_state[visible].untyped_storage().data_ptr()
    for layer in model.graph.layer_names:
        torch.testing.assert_close(data_state[layer], expected_data[layer], rtol=0, atol=1e-12)
        torch.testing.assert_close(model_state[layer], expected_model[layer], rtol=0, atol=1e-12)
        assert torch.equal(joint.chains.state[layer], separate.chains.state[layer]), layer
    assert joint.chains.n_sweeps == separate.chains.n_sweeps


@pytest.mark.parametrize("name", sorted(TWO_BLOCK_GRAPHS))
def test_joint_pass_applies_to_two_block_graphs(name):
    model = random_model(*TWO_BLOCK_GRAPHS[name], seed=6)
    estimator = PCD(1)
    estimator.model_term(model, 2, torch.Generator().manual_seed(7))

    assert isinstance(joint_pass_for(model, model.graph.visible, estimator.chains.schedule), JointPass)


@pytest.mark.parametrize("name", ["dbm", "drm_softmax", "skip_spin"])
def test_joint_pass_declines_deeper_graphs(name):
    model = random_model(*SMALL_GRAPHS[name], seed=8)
    estimator = PCD(1)
    estimator.model_term(model, 2, torch.Generator().manual_seed(9))

    assert joint_pass_for(model, model.graph.visible, estimator.chains.schedule) is None


def test_joint_pass_declines_partial_clamping():
    # Clamping only x of a two-visible RBM leaves y among the hidden layers of the data term.
    layers = [("x", 4, "bernoulli", True), ("y", 3, "softmax", True), ("h", 3, "bernoulli", False)]
    model = random_model(layers, [("x", "h"), ("y", "h")], seed=10)
    estimator = PCD(1, clamped=["x"])
    estimator.model_term(model, 2, torch.Generator().manual_seed(11))

    assert joint_pass_for(model, ("x",), estimator.chains.schedule) is None


def test_joint_phases_record_no_gradient():
    model = random_model(*SMALL_GRAPHS["rbm"], seed=12)
    batch = batch_for(model, 4, seed=13)
    estimator = PCD(1)

    data_state, model_state = estimator.phases(model, batch, torch.Generator().manual_seed(14))

    assert torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())
    assert not any(t.requires_grad for t in [*data_state.values(), *model_state.values()])


ROWS = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]] * 6, dtype=torch.float64)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"v": ROWS.float()}, "layer 'v' of the batch is torch.float32 on cpu; expected torch.float64"),
        ({"v": ROWS.to(torch.uint8)}, "layer 'v' of the batch is torch.uint8 on cpu; expected torch.float64"),
        ({"v": ROWS[0]}, r"layer 'v' of the batch has shape \(5,\); expected \(rows, 5\)"),
        ({"v": ROWS[:, :4]}, r"layer 'v' of the batch has shape \(6, 4\); expected \(rows, 5\)"),
        ({"h": ROWS}, "the batch is missing data layer 'v'"),
    ],
    ids=["float32", "uint8", "one-dimensional", "too-narrow", "missing"],
)
def test_joint_phases_reject_malformed_batch(batch, message):
    model = random_model(*SMALL_GRAPHS["rbm"], seed=15)

    with pytest.raises(ValueError, match=message):
        PCD(1).phases(model, batch, torch.Generator().manual_seed(16))


def test_joint_phases_reject_unequal_rows():
    model = random_model(*TWO_BLOCK_GRAPHS["three_visible"], seed=17)
    batch = batch_for(model, 4, seed=18)
    batch["b"] = batch["b"][:3]

    with pytest.raises(ValueError, match="layer 'b' of the batch has 3 rows and another layer 4"):
        PCD(1).phases(model, batch, torch.Generator().manual_seed(19))
