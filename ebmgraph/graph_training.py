"""Train a declared graph, or the RBM and DNN presets, on MNIST from the command line.

``ebmgraph train --graph FILE`` reads a graph declaration in the JSON form of
:meth:`Graph.to_dict` and trains it with one of the estimators of
:mod:`ebmgraph.learning.algorithms`, without pretraining. The visible layer named
``x`` receives the images. A visible layer named ``y``, if there is one, receives
the one-hot labels, and every other layer must be hidden. ``--family rbm`` is the graph
``x - h`` with ``h`` of size ``--hidden[0]``. ``--family dnn`` trains the
feed-forward network ``x -> h1 -> ... -> y`` by back-propagation alone.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from ebmgraph.experiments import ClassificationData, Protocol, mean_field_error, run_family
from ebmgraph.graph import Graph, GraphError
from ebmgraph.learning.algorithms import make_estimator
from ebmgraph.learning.monitors import reconstruction_error
from ebmgraph.learning.trainer import Trainer
from ebmgraph.model import EnergyModel
from ebmgraph.presets import DeepRelationalModel

__all__ = ["read_graph", "check_data_layers", "build_model", "rbm_graph", "train_graph", "train_dnn"]

logger = logging.getLogger(__name__)


def read_graph(path: Path) -> Graph:
    """Read a graph declaration written as JSON by :meth:`Graph.to_dict`.

    Raises
    ------
    ValueError
        Naming the file when it is missing, is not JSON, or does not declare a graph.
    """
    try:
        description = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--graph {path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--graph {path} is not valid JSON: {error}") from None
    try:
        return Graph.from_dict(description)
    except GraphError as error:
        raise ValueError(f"--graph {path} does not declare a valid graph: {error}") from None


def check_data_layers(graph: Graph, n_pixels: int, n_classes: int) -> tuple[str, ...]:
    """Return the data layers of ``graph`` (``x``, and ``y`` when visible) after checking their sizes."""
    visible = set(graph.visible)
    if "x" not in visible:
        raise ValueError(f"the graph needs a visible layer named 'x' for the {n_pixels} image pixels; its visible layers are {sorted(visible)}")
    others = sorted(visible - {"x", "y"})
    if others:
        raise ValueError(f"visible layers {others} receive no data; only 'x' (images) and 'y' (labels) do, so declare the others hidden")
    expected = {"x": n_pixels, "y": n_classes}
    for name in ("x", "y"):
        if name in visible and graph[name].size != expected[name]:
            raise ValueError(f"layer {name!r} has {graph[name].size} units, but the data has {expected[name]}")
    return tuple(name for name in ("x", "y") if name in visible)


def train_graph(
    model: EnergyModel,
    data: ClassificationData,
    protocol: Protocol,
    *,
    algorithm: str,
    k: int,
    generator: torch.Generator,
    progress: bool = False,
) -> dict:
    """Train ``model`` on the images (and labels) of ``data`` with the estimator ``algorithm``.

    Returns
    -------
    dict
        ``family``, ``seconds``, ``history`` (one record per epoch), the final
        ``reconstruction_error`` of the validation images, and the mean-field
        ``validation_error`` and ``test_error`` when the graph has a label layer
        ``y`` joined to the images through hidden layers.
    """
    layers = check_data_layers(model.graph, data.train_x.shape[1], data.n_classes)
    options = {"steps": protocol.mean_field_steps} if algorithm == "mf-cd" else {"k": k, "mean_field_steps": protocol.mean_field_steps}
    estimator = make_estimator(algorithm, **options)
    batch = {"x": data.train_x.to(model.dtype)}
    if "y" in layers:
        batch["y"] = data.train_y(model.dtype)

    start = time.perf_counter()
    trainer = Trainer(model, estimator, protocol.config(protocol.epochs, learning_rate_schedule=protocol.learning_rate_schedule),
                      generator=generator)
    history = trainer.fit(batch, progress=progress)
    record = {"family": "graph", "seconds": time.perf_counter() - start, "history": history}

    validation = {"x": data.validation_x.to(model.dtype)}
    if "y" in layers:
        validation["y"] = torch.nn.functional.one_hot(data.validation_labels, data.n_classes).to(model.dtype)
    record["reconstruction_error"] = reconstruction_error(model, validation, clamped=layers)
    if isinstance(model, DeepRelationalModel):
        steps = protocol.mean_field_steps
        record["validation_error"] = mean_field_error(model, data.validation_x.to(model.dtype), data.validation_labels, steps=steps)
        if data.test_x is not None:
            record["test_error"] = mean_field_error(model, data.test_x.to(model.dtype), data.test_labels, steps=steps)
    return record


def build_model(graph: Graph, data: ClassificationData, generator: torch.Generator) -> EnergyModel:
    """Instantiate ``graph`` after checking its data layers.

    A graph with a visible label layer ``y`` becomes a :class:`DeepRelationalModel`,
    whose mean-field read-out classifies images whatever the hidden layers between
    ``x`` and ``y`` are.
    """
    layers = check_data_layers(graph, data.train_x.shape[1], data.n_classes)
    kind = DeepRelationalModel if "y" in layers else EnergyModel
    return kind(graph, generator=generator, device=data.train_x.device)


def rbm_graph(n_pixels: int, n_hidden: int) -> Graph:
    """Declare the RBM ``x - h`` on the images."""
    graph = Graph()
    graph.add_layer("x", n_pixels, visible=True)
    graph.add_layer("h", n_hidden)
    graph.add_edge("x", "h")
    return graph


def train_dnn(data: ClassificationData, protocol: Protocol, generator: torch.Generator) -> tuple[dict, dict]:
    """Train the DNN family; returns its record and the network as ``{"sizes", "state"}``."""
    result = run_family("dnn", data, protocol, generator=generator)
    network = result.model
    sizes = [layer.in_features for layer in network.layers] + [network.layers[-1].out_features]
    return result.summary(), {"sizes": sizes, "state": network.state_dict()}
