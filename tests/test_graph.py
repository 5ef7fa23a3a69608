import networkx as nx
import pytest

from ebmgraph import EnergyModel, Gaussian, Graph, GraphError, Layer


def chain(*names):
    graph = Graph()
    for index, name in enumerate(names):
        graph.add_layer(name, 3, visible=index == 0)
    for a, b in zip(names, names[1:]):
        graph.add_edge(a, b)
    return graph


def test_declaration_order_and_views():
    graph = chain("v", "h1", "h2")
    graph.add_layer("top", 2)
    graph.add_edge("v", "top")

    assert graph.layer_names == ("v", "h1", "h2", "top")
    assert graph.edges == (("v", "h1"), ("h1", "h2"), ("v", "top"))
    assert graph.visible == ("v",)
    assert graph.hidden == ("h1", "h2", "top")
    assert graph.neighbours("v") == ("h1", "top")


def test_networkx_view_carries_layer_attributes():
    graph = Graph()
    graph.add_layer("x", (28, 28), visible=True)
    graph.add_layer("h", 10, "spin")
    graph.add_edge("x", "h")

    assert isinstance(graph.nx, nx.Graph)
    assert graph.nx.nodes["x"]["size"] == 784
    assert graph.nx.nodes["x"]["visible"] is True
    assert graph.nx.nodes["h"]["units"] == "spin"
    assert graph.nx.has_edge("h", "x")


def test_layer_shape_flattens_to_size():
    layer = Layer("x", (28, 28), visible=True)
    assert layer.size == 784
    assert layer.shape == (28, 28)


def test_non_chain_graphs_are_accepted():
    multimodal = Graph()
    for name in ("image", "text"):
        multimodal.add_layer(name, 4, visible=True)
    for name in ("h_image", "h_text", "joint"):
        multimodal.add_layer(name, 3)
    for a, b in [("image", "h_image"), ("text", "h_text"), ("h_image", "joint"), ("h_text", "joint")]:
        multimodal.add_edge(a, b)
    star = Graph()
    star.add_layer("centre", 3)
    for index in range(4):
        star.add_layer(f"leaf{index}", 2, visible=True)
        star.add_edge("centre", f"leaf{index}")
    skip = chain("x", "h1", "h2")
    skip.add_edge("x", "h2")

    for graph in (multimodal, star, skip):
        EnergyModel(graph)


@pytest.mark.parametrize(
    "declare, message",
    [
        (lambda g: g.add_layer("v", 3), "duplicate layer name 'v'"),
        (lambda g: g.add_edge("v", "h9"), "edge \\('v', 'h9'\\): unknown layer 'h9'"),
        (lambda g: g.add_edge("h1", "h1"), "edge \\('h1', 'h1'\\): a layer cannot be joined to itself"),
        (lambda g: g.add_edge("v", "h1"), "edge \\('v', 'h1'\\): repeated edge"),
        (lambda g: g.add_edge("h1", "v"), "edge \\('h1', 'v'\\): repeated edge"),
        (lambda g: g.add_layer("h3", 0), "layer 'h3': size must be at least 1"),
        (lambda g: g.add_layer("h3", (28, 0)), "layer 'h3': size must be at least 1"),
        (lambda g: g.add_layer("h3", 2.5), "layer 'h3': size must be a positive int"),
        (lambda g: g.add_layer("h3", 4, "binary"), "layer 'h3': unknown unit family 'binary'"),
        (lambda g: g.add_layer("h-3", 4), "layer name must be a Python identifier.*'h-3'"),
    ],
)
def test_invalid_declarations_name_the_fault(declare, message):
    graph = chain("v", "h1", "h2")
    with pytest.raises(GraphError, match=message):
        declare(graph)


def test_isolated_layer_is_rejected_by_model():
    graph = chain("v", "h1")
    graph.add_layer("lonely", 3)
    with pytest.raises(GraphError, match="layer 'lonely' is reached by no edge"):
        EnergyModel(graph)


def test_empty_graph_is_rejected():
    with pytest.raises(GraphError, match="no layers"):
        EnergyModel(Graph())


def test_graph_error_is_value_error():
    assert issubclass(GraphError, ValueError)


def test_unknown_layer_lookup_lists_layers():
    with pytest.raises(KeyError, match="unknown layer 'h7'"):
        chain("v", "h1")["h7"]


def test_dict_round_trip_keeps_declaration():
    graph = Graph()
    graph.add_layer("x", (2, 3), Gaussian(std=(1.0, 0.5, 1.0, 1.0, 2.0, 1.0)), visible=True)
    graph.add_layer("h", 4, "spin")
    graph.add_layer("y", 3, "softmax", visible=True)
    graph.add_edge("x", "h")
    graph.add_edge("h", "y")

    rebuilt = Graph.from_dict(graph.to_dict())

    assert rebuilt.to_dict() == graph.to_dict()
    assert rebuilt["x"].units == graph["x"].units
    assert rebuilt["x"].shape == (2, 3)


def _description():
    graph = Graph()
    graph.add_layer("x", 4, Gaussian(std=0.5), visible=True)
    graph.add_layer("h", 3)
    graph.add_edge("x", "h")
    return graph.to_dict()


def _with(change):
    description = _description()
    change(description)
    return description


@pytest.mark.parametrize(
    "description, message",
    [
        (_with(lambda d: d["layers"][1].update(visble=False)), r"layer 'h': unknown key 'visble'.*'bernoulli' \(none\)"),
        (_with(lambda d: d["layers"][0].update(stdd=1.0)), r"layer 'x': unknown key 'stdd'.*'gaussian' \(std\)"),
        (_with(lambda d: d["layers"][1].pop("units")), "layer 'h': missing key 'units'"),
        (_with(lambda d: d["layers"][1].pop("name")), "layer entry 1: missing key 'name'"),
        (_with(lambda d: d["layers"][1].update(units="bernouli")), "layer 'h': unknown unit family 'bernouli'"),
        (_with(lambda d: d["layers"][0].update(std="a")), "layer 'x': Gaussian std must be a number"),
        (_with(lambda d: d["layers"].append("h2")), "layer entry 2 must be an object"),
        (_with(lambda d: d["edges"].append(["x", "h", "x"])), r"edge 1 must be a pair of layer names"),
        (_with(lambda d: d.update(layers={"x": 4})), "'layers' of a graph description must be a list, got dict"),
        ([1, 2], "needs the keys 'layers' and 'edges'"),
    ],
)
def test_from_dict_rejects_malformed_entry(description, message):
    with pytest.raises(GraphError, match=message):
        Graph.from_dict(description)


def test_from_dict_accepts_int_shape():
    description = _with(lambda d: d["layers"][1].update(shape=3))

    assert Graph.from_dict(description)["h"].shape == (3,)


def test_constructor_with_layers_and_edges():
    graph = Graph([Layer("v", 3, visible=True), Layer("h", 2)], [("v", "h")])
    assert graph.edges == (("v", "h"),)
    assert "v" in graph


def test_model_keeps_its_own_copy_of_graph():
    graph = chain("v", "h1")
    model = EnergyModel(graph)
    graph.add_layer("late", 2)
    graph.add_edge("h1", "late")
    assert "late" not in model.graph
    assert model.schedule().free == ("v", "h1")


def test_unknown_layer_error_is_value_and_key_error():
    graph = chain("v", "h1")
    with pytest.raises(ValueError, match="unknown layer 'zz'"):
        graph["zz"]
    with pytest.raises(KeyError):
        graph["zz"]


def test_visible_must_be_bool():
    with pytest.raises(GraphError, match="visible must be True or False, got 'yes'"):
        Graph().add_layer("v", 3, visible="yes")


def test_numpy_integer_size_is_accepted():
    import numpy as np

    assert Graph().add_layer("v", np.int64(3)).size == 3
