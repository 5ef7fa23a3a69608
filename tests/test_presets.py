import pytest
import torch

from ebmgraph import DeepRelationalModel, Graph, GraphError, dbm, drm, rbm


def test_rbm_declaration():
    model = rbm(6, 4, hidden_units="spin")
    assert model.graph.layer_names == ("v", "h")
    assert model.graph.visible == ("v",)
    assert model.graph["h"].units.name == "spin"


def test_dbm_declaration():
    model = dbm([8, 5, 3])
    assert model.graph.edges == (("v", "h1"), ("h1", "h2"))
    assert model.graph.visible == ("v",)


def test_dbm_needs_a_hidden_layer():
    with pytest.raises(ValueError, match="at least one hidden size"):
        dbm([8])


def test_drm_declaration():
    model = drm(x=(4, 4), hidden=(6, 5, 4), y=3, y_units="softmax")
    assert isinstance(model, DeepRelationalModel)
    assert model.graph.layer_names == ("x", "h1", "h2", "h3", "y")
    assert model.graph.edges == (("x", "h1"), ("h1", "h2"), ("h2", "h3"), ("h3", "y"))
    assert model.graph.visible == ("x", "y")
    assert model.hidden_names == ("h1", "h2", "h3")
    assert model.n_classes == 3


def test_drm_needs_a_hidden_layer():
    with pytest.raises(ValueError, match="at least one hidden layer"):
        drm(hidden=())


def random_drm(y_units="bernoulli"):
    generator = torch.Generator().manual_seed(3)
    model = drm(x=6, hidden=(5, 4), y=3, y_units=y_units, init_std=1.0, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        for bias in model.biases.values():
            bias.normal_(generator=generator)
    return model


def mean_field_by_hand(model, x, steps, y_activation):
    """Independent DRM mean field with x clamped: h1 and y from zeros, then h2, per sweep."""
    w1, w2, w3 = model.weights["x-h1"], model.weights["h1-h2"], model.weights["h2-y"]
    b = model.biases
    h2 = torch.zeros(x.shape[0], 4, dtype=x.dtype)
    for _ in range(steps):
        h1 = torch.sigmoid(b["h1"] + x @ w1 + h2 @ w2.T)
        y = y_activation(b["y"] + h2 @ w3)
        h2 = torch.sigmoid(b["h2"] + h1 @ w2 + y @ w3.T)
    return y


@pytest.mark.parametrize("y_units, activation", [("bernoulli", torch.sigmoid), ("softmax", lambda a: torch.softmax(a, dim=-1))])
def test_drm_predict_is_mean_field_readout(y_units, activation):
    model = random_drm(y_units)
    x = torch.bernoulli(torch.full((7, 6), 0.5), generator=torch.Generator().manual_seed(1)).double()

    predicted = model.predict(x, steps=10)

    torch.testing.assert_close(predicted, mean_field_by_hand(model, x, 10, activation), rtol=0, atol=1e-12)
    assert torch.equal(model.classify(x), predicted.argmax(dim=1))


def test_drm_generate_starts_from_hidden_means():
    model = random_drm()
    labels = torch.tensor([0, 2])
    h1_mean = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    h2_mean = torch.rand(4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    b, w1, w2, w3 = model.biases, model.weights["x-h1"], model.weights["h1-h2"], model.weights["h2-y"]
    y = torch.nn.functional.one_hot(labels, 3).double()
    # With y clamped the blocks are {x, h2} then {h1}: one sweep by hand.
    h2 = torch.sigmoid(b["h2"] + h1_mean @ w2 + y @ w3.T)
    x = torch.sigmoid(b["x"] + h1_mean @ w1.T)
    h1 = torch.sigmoid(b["h1"] + x @ w1 + h2 @ w2.T)
    x_after_two = torch.sigmoid(b["x"] + h1 @ w1.T)

    generated = model.generate(labels, steps=2, hidden_means={"h1": h1_mean, "h2": h2_mean})

    torch.testing.assert_close(generated, x_after_two, rtol=0, atol=1e-12)


def test_drm_generate_accepts_one_hot_rows_and_samples():
    model = random_drm()
    rows = torch.eye(3, dtype=torch.float64)
    by_index = model.generate(torch.arange(3), steps=3)
    by_rows = model.generate(rows, steps=3)
    sampled = model.generate(torch.arange(3), steps=3, sample=True, generator=torch.Generator().manual_seed(4))

    torch.testing.assert_close(by_rows, by_index)
    assert sampled.shape == (3, 6)
    assert set(sampled.unique().tolist()) <= {0.0, 1.0}


def test_drm_generate_sample_uses_every_neighbour_of_x():
    # x joins both h1 and y; weights of +-20 on x - y make the draw of x given the label all but certain.
    graph = Graph()
    graph.add_layer("x", 4, visible=True)
    graph.add_layer("y", 2, "softmax", visible=True)
    graph.add_layer("h1", 3)
    graph.add_edge("x", "h1")
    graph.add_edge("h1", "y")
    graph.add_edge("x", "y")
    model = DeepRelationalModel(graph, init_std=0.0, dtype=torch.float64)
    pattern = torch.tensor([20.0, -20.0, 20.0, -20.0], dtype=torch.float64)
    with torch.no_grad():
        model.weights["x-y"].copy_(torch.stack([pattern, -pattern], dim=1))

    sampled = model.generate(torch.tensor([0, 1]), steps=2, sample=True, generator=torch.Generator().manual_seed(0))

    assert sampled.tolist() == [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]


def test_drm_generate_sample_with_other_hidden_names():
    graph = Graph()
    graph.add_layer("x", 4, visible=True)
    graph.add_layer("y", 2, "softmax", visible=True)
    graph.add_layer("hx", 3)
    graph.add_edge("x", "hx")
    graph.add_edge("hx", "y")

    sampled = DeepRelationalModel(graph).generate(torch.tensor([0, 1]), steps=2, sample=True, generator=torch.Generator())

    assert sampled.shape == (2, 4)


@pytest.mark.parametrize("visible", [("x",), ("y",)])
def test_drm_class_rejects_graph_without_data_layers(visible):
    graph = Graph()
    graph.add_layer("x", 4, visible="x" in visible)
    graph.add_layer("y", 2, visible="y" in visible)
    graph.add_edge("x", "y")

    with pytest.raises(GraphError, match="needs visible layers 'x' \\(data\\) and 'y' \\(labels\\)"):
        DeepRelationalModel(graph)


def test_drm_generate_rejects_bad_labels():
    model = random_drm()
    with pytest.raises(ValueError, match="class indices must lie in \\[0, 2\\]"):
        model.generate(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shape \\(batch,\\)"):
        model.generate(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="layer 'y'"):
        model.generate(torch.full((2, 3), 2.0, dtype=torch.float64))


def test_drm_predict_rejects_wrong_width():
    with pytest.raises(ValueError, match="layer 'x': expected shape \\(batch, 6\\)"):
        random_drm().predict(torch.zeros(2, 7, dtype=torch.float64))


def test_predict_rejects_sweeps_that_cannot_reach_y():
    model = drm(6, (4, 3), 3)

    with pytest.raises(ValueError, match="steps=1 mean-field sweeps from zeros leave 'y' independent of 'x'.*pass steps >= 2"):
        model.predict(torch.rand(2, 6), steps=1)


def test_generate_rejects_sweeps_that_cannot_reach_x():
    model = drm(6, (4, 3), 3)

    with pytest.raises(ValueError, match="leave 'x' independent of 'y'.*pass steps >= 2"):
        model.generate(torch.tensor([0, 1]), steps=1)

    # Per-label starting means carry the label themselves, so one sweep is allowed.
    model.generate(torch.tensor([0, 1]), steps=1, hidden_means={"h1": torch.rand(2, 4)})
