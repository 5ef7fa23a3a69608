import json

import pytest
import torch

from ebmgraph import Graph
from ebmgraph.experiments import Protocol
from ebmgraph.learning.monitors import reconstruction_error
from ebmgraph.graph_training import build_model, check_data_layers, rbm_graph, read_graph, train_dnn, train_graph
from ebmgraph.presets import DeepRelationalModel
from helpers import toy_data

TINY = Protocol(hidden=(6, 4), epochs=3, batch_size=10, mean_field_steps=3)
LONGER = Protocol(hidden=(6, 4), epochs=40, batch_size=5, mean_field_steps=3)
# Labels reach y through three hidden layers of the two-sided graph; 150 epochs of mean-field PCD gave
# 0 % test error for learning rates 0.1 and 0.3, and 40 epochs left it at chance.
LABELLED = Protocol(hidden=(6, 4), epochs=150, batch_size=5, mean_field_steps=5)


def two_sided_graph(n_pixels: int = 16, n_classes: int = 2) -> Graph:
    graph = Graph()
    graph.add_layer("x", n_pixels, visible=True)
    graph.add_layer("y", n_classes, "softmax", visible=True)
    graph.add_layer("hx", 8)
    graph.add_layer("hy", 3)
    graph.add_layer("top", 4)
    graph.add_edge("x", "hx")
    graph.add_edge("y", "hy")
    graph.add_edge("hx", "top")
    graph.add_edge("hy", "top")
    return graph


def test_read_graph_round_trip(tmp_path):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(two_sided_graph().to_dict()))

    graph = read_graph(path)

    assert graph.to_dict() == two_sided_graph().to_dict()


@pytest.mark.parametrize(
    ("text", "message"),
    [(None, "file not found"), ("{not json", "is not valid JSON"), ('{"layers": []}', "does not declare a valid graph")],
)
def test_read_graph_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "graph.json"
    if text is not None:
        path.write_text(text)

    with pytest.raises(ValueError, match=message):
        read_graph(path)


def test_data_layers_checked():
    graph = two_sided_graph()

    assert check_data_layers(graph, 16, 2) == ("x", "y")
    with pytest.raises(ValueError, match="layer 'x' has 16 units, but the data has 784"):
        check_data_layers(graph, 784, 2)
    with pytest.raises(ValueError, match="visible layer named 'x'"):
        check_data_layers(_renamed_visible(), 16, 2)


def _renamed_visible() -> Graph:
    graph = Graph()
    graph.add_layer("image", 16, visible=True)
    graph.add_layer("h", 4)
    graph.add_edge("image", "h")
    return graph


def test_extra_visible_layer_rejected():
    graph = two_sided_graph()
    graph.add_layer("z", 3, visible=True)
    graph.add_edge("z", "top")

    with pytest.raises(ValueError, match="visible layers \\['z'\\] receive no data"):
        check_data_layers(graph, 16, 2)


def test_graph_with_labels_classifies():
    data = toy_data(0)
    model = build_model(two_sided_graph(), data, torch.Generator().manual_seed(0))
    assert isinstance(model, DeepRelationalModel)

    record = train_graph(model, data, LABELLED, algorithm="mf-pcd", k=1, generator=torch.Generator().manual_seed(1))

    # The toy classes differ in which half of the image is lit; chance is 50 %.
    assert record["test_error"] < 0.2
    assert len(record["history"]) == 150


def test_rbm_training_lowers_reconstruction_error():
    data = toy_data(0)
    model = build_model(rbm_graph(16, 6), data, torch.Generator().manual_seed(0))
    validation = {"x": data.validation_x}

    before = reconstruction_error(model, validation, clamped=("x",))
    record = train_graph(model, data, LONGER, algorithm="pcd", k=1, generator=torch.Generator().manual_seed(1))

    assert record["reconstruction_error"] < 0.5 * before
    assert "test_error" not in record


def test_dnn_returns_loadable_network():
    record, network = train_dnn(toy_data(0), TINY, torch.Generator().manual_seed(0))

    assert network["sizes"] == [16, 6, 4, 2]
    assert record["family"] == "dnn"
    assert 0.0 <= record["test_error"] <= 1.0
