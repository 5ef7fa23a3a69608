import pytest
import torch

from ebmgraph import dbm, drm
from ebmgraph.learning.finetune import FeedForward, classification_error, finetune, unroll


def test_unrolled_network_computes_bottom_up_pass():
    model = drm(6, (5, 4), 3, init_std=1.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        for bias in model.biases.values():
            bias.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.rand(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    logits = unroll(model, ["x", "h1", "h2", "y"])(x)

    h1 = torch.sigmoid(model.biases["h1"] + x @ model.weight("x", "h1"))
    h2 = torch.sigmoid(model.biases["h2"] + h1 @ model.weight("h1", "h2"))
    torch.testing.assert_close(logits, model.biases["y"] + h2 @ model.weight("h2", "y"), rtol=0, atol=1e-12)


def test_unroll_adds_output_layer():
    model = dbm([6, 5, 4], dtype=torch.float64)
    network = unroll(model, ["v", "h1", "h2"], output_size=3, generator=torch.Generator().manual_seed(3))
    assert [layer.out_features for layer in network.layers] == [5, 4, 3]


def test_unroll_rejects_path_off_the_graph():
    with pytest.raises(KeyError, match="no edge between layers 'x' and 'h2'"):
        unroll(drm(6, (5, 4), 3), ["x", "h2", "y"])


def test_finetune_lowers_training_error():
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(200, 6, generator=generator)
    labels = (x[:, 0] + x[:, 1] > x[:, 2] + x[:, 3]).long()
    network = FeedForward([6, 8, 2], generator=generator)
    before = classification_error(network, x, labels)

    history = finetune(network, x, labels, epochs=60, batch_size=20, learning_rate=0.5, generator=generator)

    assert history[-1]["loss"] < history[0]["loss"]
    assert classification_error(network, x, labels) < min(before, 0.15)


def test_finetune_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="int64 class indices of shape \\(4,\\)"):
        finetune(FeedForward([3, 2]), torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize(
    "labels, options, message",
    [
        (torch.tensor([0, 1, 2, 5]), {}, "labels must lie in \\[0, 2\\]"),
        (torch.tensor([0.0, 1.0, 2.0, 1.0]), {}, "int64 class indices"),
        (torch.tensor([0, 1, 2, 1]), {"epochs": 0}, "epochs must be a positive int"),
        (torch.tensor([0, 1, 2, 1]), {"learning_rate": float("nan")}, "learning_rate must be a positive finite"),
    ],
)
def test_finetune_rejects_bad_arguments(labels, options, message):
    with pytest.raises(ValueError, match=message):
        finetune(FeedForward([3, 3]), torch.zeros(4, 3), labels, **options)


def test_finetune_reports_divergence():
    from ebmgraph.learning import DivergenceError

    network = FeedForward([3, 4, 2])
    with torch.no_grad():
        network.layers[0].weight[0, 0] = float("inf")
    x = torch.rand(8, 3, generator=torch.Generator().manual_seed(5))
    with pytest.raises(DivergenceError, match="layers.0.weight became non-finite in epoch 1"):
        finetune(network, x, torch.tensor([0, 1] * 4))


def test_unroll_rejects_zero_output_size():
    with pytest.raises(ValueError, match="output_size must be a positive int"):
        unroll(dbm([6, 5, 4]), ["v", "h1"], output_size=0)


def test_classification_error_rejects_empty_data():
    with pytest.raises(ValueError, match="empty data"):
        classification_error(FeedForward([3, 2]), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
