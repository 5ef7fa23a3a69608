"""Small models shared by the tests, with parameters set from lists."""

from __future__ import annotations

import torch

from ebmgraph import EnergyModel, Graph, rbm
from ebmgraph.experiments import ClassificationData


def set_parameters(model: EnergyModel, biases: dict, weights: dict) -> EnergyModel:
    """Copy plain lists into a model's biases and weights (keys as in the model)."""
    with torch.no_grad():
        for name, values in biases.items():
            model.biases[name].copy_(torch.tensor(values, dtype=model.dtype))
        for key, values in weights.items():
            model.weights[key].copy_(torch.tensor(values, dtype=model.dtype))
    return model


def reference_rbm(dtype=torch.float64) -> EnergyModel:
    """The 3 x 2 binary RBM used by the cases: W, b (visible) and c (hidden)."""
    model = rbm(3, 2, dtype=dtype)
    return set_parameters(
        model,
        {"v": [0.1, -0.2, 0.3], "h": [-0.5, 0.4]},
        {"v-h": [[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]]},
    )


def tiny_dbm(dtype=torch.float64) -> EnergyModel:
    """DBM v(2) - h1(2) - h2(1) whose exact values are known."""
    graph = Graph()
    graph.add_layer("v", 2, visible=True)
    graph.add_layer("h1", 2)
    graph.add_layer("h2", 1)
    graph.add_edge("v", "h1")
    graph.add_edge("h1", "h2")
    model = EnergyModel(graph, dtype=dtype)
    return set_parameters(
        model,
        {"v": [0.1, -0.1], "h1": [0.2, -0.3], "h2": [0.05]},
        {"v-h1": [[1.0, -0.5], [0.5, 1.5]], "h1-h2": [[1.2], [-0.8]]},
    )


def random_model(layers, edges, *, seed: int, std: float = 1.0, dtype=torch.float64) -> EnergyModel:
    """A model over ``layers`` (name, size, units, visible) and ``edges`` with normal parameters."""
    graph = Graph()
    for name, size, units, visible in layers:
        graph.add_layer(name, size, units, visible=visible)
    for a, b in edges:
        graph.add_edge(a, b)
    generator = torch.Generator().manual_seed(seed)
    model = EnergyModel(graph, init_std=std, generator=generator, dtype=dtype)
    with torch.no_grad():
        for bias in model.biases.values():
            bias.copy_(torch.randn(bias.shape, generator=generator, dtype=dtype) * 0.5)
    return model


# Small graphs of every required shape, up to 18 discrete units: name -> (layers, edges).
SMALL_GRAPHS = {
    "rbm": ([("v", 5, "bernoulli", True), ("h", 4, "bernoulli", False)], [("v", "h")]),
    "dbm": ([("v", 4, "bernoulli", True), ("h1", 3, "bernoulli", False), ("h2", 3, "bernoulli", False)], [("v", "h1"), ("h1", "h2")]),
    "drm_softmax": (
        [("x", 4, "bernoulli", True), ("h1", 3, "bernoulli", False), ("h2", 3, "bernoulli", False), ("y", 3, "softmax", True)],
        [("x", "h1"), ("h1", "h2"), ("h2", "y")],
    ),
    "skip_spin": (
        [("x", 4, "spin", True), ("h1", 3, "bernoulli", False), ("h2", 3, "spin", False)],
        [("x", "h1"), ("h1", "h2"), ("x", "h2")],
    ),
    "three_visible": (
        [("a", 3, "bernoulli", True), ("b", 3, "spin", True), ("c", 4, "softmax", True), ("top", 4, "bernoulli", False)],
        [("a", "top"), ("b", "top"), ("c", "top")],
    ),
}


def toy_data(seed: int) -> ClassificationData:
    """Two classes of 4 x 4 images: the top half or the bottom half lit, with noise."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int):
        labels = torch.randint(0, 2, (n,), generator=generator)
        images = torch.rand(n, 16, generator=generator) * 0.2
        images[labels == 0, :8] += 0.8
        images[labels == 1, 8:] += 0.8
        return images, labels

    train_x, train_labels = split(40)
    validation_x, validation_labels = split(20)
    test_x, test_labels = split(20)
    return ClassificationData(train_x, train_labels, validation_x, validation_labels, test_x, test_labels, n_classes=2)
