"""Declaration of a layered energy graph: layers of units and the undirected edges between them."""

from __future__ import annotations

import inspect
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import networkx as nx

from ebmgraph.units import UnitFamily, get_unit_family, make_unit_family

__all__ = ["Layer", "Graph", "GraphError", "UnknownLayerError"]

_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class GraphError(ValueError):
    """An invalid graph declaration; the message names the layer or edge at fault."""


class UnknownLayerError(GraphError, KeyError):
    """A layer name that the graph does not declare (both a ``ValueError`` and a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Layer:
    """One layer of units.

    Parameters
    ----------
    name : str
        A Python identifier, unique in its graph (it keys biases, weights and states).
    shape : int or tuple of int
        Number of units, or a shape such as ``(28, 28)``. States are flattened to
        ``(batch, size)`` inside the engine.
    units : str or UnitFamily
        A registered family name (``"bernoulli"``, ``"spin"``, ``"softmax"``,
        ``"gaussian"``) or a :class:`~ebmgraph.units.UnitFamily` instance.
    visible : bool
        Whether data is observed on this layer.
    """

    name: str
    shape: tuple[int, ...]
    units: UnitFamily
    visible: bool = False
    size: int = field(init=False)

    def __init__(self, name: str, shape: int | Sequence[int], units: str | UnitFamily = "bernoulli", visible: bool = False):
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise GraphError(f"layer name must be a Python identifier such as 'h1', got {name!r}")
        shape_tuple = _as_shape(name, shape)
        if not isinstance(visible, bool):
            raise GraphError(f"layer {name!r}: visible must be True or False, got {visible!r}")
        try:
            family = get_unit_family(units)
        except (ValueError, TypeError) as error:
            raise GraphError(f"layer {name!r}: {error}") from None
        try:
            family.check_size(math.prod(shape_tuple), layer=name)
        except ValueError as error:
            raise GraphError(str(error)) from None
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "shape", shape_tuple)
        object.__setattr__(self, "units", family)
        object.__setattr__(self, "visible", visible)
        object.__setattr__(self, "size", math.prod(shape_tuple))


def _as_shape(name: str, shape) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        dims = (shape,)
    elif isinstance(shape, (tuple, list)):
        dims = tuple(shape)
    else:
        dims = None
    if dims is None or not dims or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
        raise GraphError(f"layer {name!r}: size must be a positive int or a tuple of positive ints, got {shape!r}")
    if any(d < 1 for d in dims):
        raise GraphError(f"layer {name!r}: size must be at least 1 in every dimension, got {shape!r}")
    return tuple(int(d) for d in dims)


_ENTRY_KEYS = ("name", "shape", "units", "visible")


def _layer_from_entry(index: int, entry) -> Layer:
    """Build the layer described by entry ``index`` of :meth:`Graph.to_dict` output.

    Keys other than ``name``, ``shape``, ``units`` and ``visible`` are options of
    the unit family, such as a Gaussian's ``std``.
    """
    if not isinstance(entry, dict):
        raise GraphError(f"layer entry {index} must be an object with the keys {list(_ENTRY_KEYS)}, got {entry!r}")
    label = f"layer {entry['name']!r}" if "name" in entry else f"layer entry {index}"
    missing = [key for key in ("name", "shape", "units") if key not in entry]
    if missing:
        raise GraphError(f"{label}: missing key {missing[0]!r}; each layer entry needs 'name', 'shape' and 'units'")
    options = {key: value for key, value in entry.items() if key not in _ENTRY_KEYS}
    units = entry["units"]
    if options:
        try:
            family_type = type(get_unit_family(units))
        except (ValueError, TypeError) as error:
            raise GraphError(f"{label}: {error}") from None
        accepted = inspect.signature(family_type).parameters
        takes_any = any(parameter.kind is parameter.VAR_KEYWORD for parameter in accepted.values())
        unknown = sorted(key for key in options if key not in accepted and not takes_any)
        if unknown:
            raise GraphError(
                f"{label}: unknown key {unknown[0]!r}; a layer entry has the keys {list(_ENTRY_KEYS)} "
                f"and the options of its unit family {units!r} ({', '.join(sorted(accepted)) or 'none'})"
            )
        try:
            units = make_unit_family(units, **options)
        except (ValueError, TypeError) as error:
            raise GraphError(f"{label}: {error}") from None
    return Layer(entry["name"], entry["shape"], units, entry.get("visible", False))


class Graph:
    """A declared layered energy graph.

    Layers are nodes and undirected weight matrices are edges of a
    :class:`networkx.Graph`, available as :attr:`nx` (read it, for example to draw
    the architecture; declare through :meth:`add_layer` and :meth:`add_edge`).
    Any graph is allowed: chains (RBM, DBM, DRM), several visible layers joined
    through a shared hidden layer, skip edges, stars, odd cycles.

    Examples
    --------
    >>> from ebmgraph import Graph
    >>> g = Graph()
    >>> g.add_layer("v", 784, visible=True)
    Layer(name='v', shape=(784,), units=Bernoulli(), visible=True, size=784)
    >>> _ = g.add_layer("h1", 500)
    >>> _ = g.add_layer("h2", 500)
    >>> g.add_edge("v", "h1")
    >>> g.add_edge("h1", "h2")
    >>> g.layer_names
    ('v', 'h1', 'h2')
    """

    def __init__(self, layers: Iterable[Layer] = (), edges: Iterable[tuple[str, str]] = ()):
        self._layers: dict[str, Layer] = {}
        self._edges: list[tuple[str, str]] = []
        self.nx = nx.Graph()
        for layer in layers:
            self._insert_layer(layer)
        for a, b in edges:
            self.add_edge(a, b)

    def add_layer(self, name: str, shape: int | Sequence[int], units: str | UnitFamily = "bernoulli", *, visible: bool = False) -> Layer:
        """Declare a layer and return it; see :class:`Layer` for the arguments."""
        layer = Layer(name, shape, units, visible)
        self._insert_layer(layer)
        return layer

    def _insert_layer(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise GraphError(f"expected a Layer, got {type(layer).__name__}")
        if layer.name in self._layers:
            raise GraphError(f"duplicate layer name {layer.name!r}")
        self._layers[layer.name] = layer
        self.nx.add_node(layer.name, size=layer.size, shape=layer.shape, units=layer.units.name, visible=layer.visible)

    def add_edge(self, a: str, b: str) -> None:
        """Declare an undirected weight matrix between layers ``a`` and ``b``.

        The weight has shape ``(size of a, size of b)`` in declaration order.
        """
        for name in (a, b):
            if name not in self._layers:
                raise GraphError(f"edge ({a!r}, {b!r}): unknown layer {name!r}; declared layers are {list(self._layers)}")
        if a == b:
            raise GraphError(f"edge ({a!r}, {b!r}): a layer cannot be joined to itself")
        if self.nx.has_edge(a, b):
            raise GraphError(f"edge ({a!r}, {b!r}): repeated edge; layers {a!r} and {b!r} are already joined")
        self._edges.append((a, b))
        self.nx.add_edge(a, b)

    @property
    def layers(self) -> tuple[Layer, ...]:
        """Layers in declaration order."""
        return tuple(self._layers.values())

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(self._layers)

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Edges in declaration order, each as declared."""
        return tuple(self._edges)

    @property
    def visible(self) -> tuple[str, ...]:
        """Names of the visible layers."""
        return tuple(name for name, layer in self._layers.items() if layer.visible)

    @property
    def hidden(self) -> tuple[str, ...]:
        """Names of the hidden layers."""
        return tuple(name for name, layer in self._layers.items() if not layer.visible)

    def __getitem__(self, name: str) -> Layer:
        try:
            return self._layers[name]
        except (KeyError, TypeError):
            raise UnknownLayerError(f"unknown layer {name!r}; declared layers are {list(self._layers)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._layers

    def neighbours(self, name: str) -> tuple[str, ...]:
        """Layers joined to ``name``, in declaration order."""
        self[name]
        return tuple(other for other in self._layers if self.nx.has_edge(name, other))

    def copy(self) -> "Graph":
        """Return an independent graph with the same layers and edges."""
        return Graph(self.layers, self.edges)

    def validate(self) -> None:
        """Check the graph as a whole; raise :class:`GraphError` naming the fault.

        A graph needs at least one edge and every layer must be reached by an edge.
        """
        if not self._layers:
            raise GraphError("the graph declares no layers")
        isolated = [name for name in self._layers if self.nx.degree(name) == 0]
        if isolated:
            raise GraphError(f"layer {isolated[0]!r} is reached by no edge; join it to another layer or remove it")

    def to_dict(self) -> dict:
        """Describe the declaration (layers, families, edges) as JSON-ready data."""
        layers = []
        for layer in self._layers.values():
            entry = {"name": layer.name, "shape": list(layer.shape), "units": layer.units.name, "visible": layer.visible}
            entry.update(layer.units.config())
            layers.append(entry)
        return {"layers": layers, "edges": [list(edge) for edge in self._edges]}

    @classmethod
    def from_dict(cls, description: dict) -> "Graph":
        """Rebuild a graph from :meth:`to_dict` output.

        Raises
        ------
        GraphError
            Naming the layer entry or edge at fault: a missing or unknown key, a
            value of the wrong type, an unknown unit family.
        """
        if not isinstance(description, dict) or "layers" not in description or "edges" not in description:
            raise GraphError("a graph description needs the keys 'layers' and 'edges'")
        layers, edges = description["layers"], description["edges"]
        for key, value in (("layers", layers), ("edges", edges)):
            if not isinstance(value, (list, tuple)):
                raise GraphError(f"{key!r} of a graph description must be a list, got {type(value).__name__}")
        graph = cls()
        for index, entry in enumerate(layers):
            graph._insert_layer(_layer_from_entry(index, entry))
        for index, edge in enumerate(edges):
            if not isinstance(edge, (list, tuple)) or len(edge) != 2:
                raise GraphError(f"edge {index} must be a pair of layer names such as ['x', 'h1'], got {edge!r}")
            graph.add_edge(*edge)
        return graph

    def __repr__(self) -> str:
        layers = ", ".join(f"{l.name}({l.size}, {l.units.name}{', visible' if l.visible else ''})" for l in self.layers)
        edges = ", ".join(f"{a}-{b}" for a, b in self._edges)
        return f"Graph(layers=[{layers}], edges=[{edges}])"
