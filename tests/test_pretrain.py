import pytest
import torch

from ebmgraph import dbm, drm
from ebmgraph.learning import CD, Trainer, TrainingConfig
from ebmgraph.learning.pretrain import bottom_up_order, greedy_pretrain, outside_in_order


def test_outside_in_order_alternates_ends():
    assert outside_in_order(drm(8, (5, 4, 3), 2)) == [("x", "h1"), ("y", "h3"), ("h1", "h2"), ("h3", "h2")]
    assert outside_in_order(drm(8, (5, 4), 2)) == [("x", "h1"), ("y", "h2"), ("h1", "h2")]
    assert outside_in_order(drm(8, (5,), 2)) == [("x", "h1"), ("y", "h1")]


def test_bottom_up_order_follows_chain():
    assert bottom_up_order(dbm([6, 4, 3])) == [("v", "h1"), ("h1", "h2")]


def toy_data(generator):
    prototypes = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float64)
    noisy = prototypes.repeat(30, 1)
    flips = torch.bernoulli(torch.full(noisy.shape, 0.05, dtype=torch.float64), generator=generator)
    return (noisy + flips) % 2, torch.eye(2, dtype=torch.float64).repeat(30, 1)


def test_pretrained_weights_equal_separately_trained_rbms():
    generator = torch.Generator().manual_seed(0)
    x, y = toy_data(generator)
    model = drm(6, (4, 3), 2, init_std=0.1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    config = TrainingConfig(epochs=3, batch_size=10)
    initial = model.weight("x", "h1").detach().clone()

    greedy_pretrain(model, {"x": x, "y": y}, [("x", "h1")], config, generator=torch.Generator().manual_seed(2))

    # The same RBM trained directly with the same generator and initial weights.
    from ebmgraph import rbm

    reference = rbm(6, 4, init_std=0.0, dtype=torch.float64)
    with torch.no_grad():
        reference.weights["v-h"].copy_(initial)
    Trainer(reference, CD(1), config, generator=torch.Generator().manual_seed(2)).fit({"v": x})
    torch.testing.assert_close(model.weight("x", "h1"), reference.weights["v-h"], rtol=0, atol=0)
    torch.testing.assert_close(model.biases["h1"], reference.biases["h"], rtol=0, atol=0)


def test_pretraining_makes_drm_classify_toy_data():
    generator = torch.Generator().manual_seed(3)
    x, y = toy_data(generator)
    model = drm(6, (8, 8), 2, init_std=0.1, generator=generator, dtype=torch.float64)
    order = outside_in_order(model)

    histories = greedy_pretrain(model, {"x": x, "y": y}, order, TrainingConfig(epochs=20, batch_size=10), generator=generator)

    assert sorted(histories) == ["h1->h2", "x->h1", "y->h2"]
    # Each RBM's reconstruction error falls while it trains.
    for history in histories.values():
        assert history[-1]["reconstruction_error"] < history[0]["reconstruction_error"]
    assert len({tuple(row) for row in model.weight("h1", "h2").detach().tolist()}) > 1


def test_pretraining_rejects_edge_without_data():
    model = drm(6, (4, 3), 2)
    with pytest.raises(ValueError, match="needs data or an earlier edge ending at 'h1'"):
        greedy_pretrain(model, {"x": torch.zeros(2, 6)}, [("h1", "h2")], TrainingConfig())


def test_pretraining_rejects_missing_edge():
    model = drm(6, (4, 3), 2)
    with pytest.raises(KeyError, match="no edge between layers 'x' and 'h2'"):
        greedy_pretrain(model, {"x": torch.zeros(2, 6)}, [("x", "h2")], TrainingConfig())


def test_order_helpers_reject_chains_off_the_graph():
    with pytest.raises(ValueError, match="'v' and 'h2' are consecutive in the chain"):
        bottom_up_order(dbm([3, 2, 2]), ["v", "h2"])
