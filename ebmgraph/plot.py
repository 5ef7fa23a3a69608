"""Figures for energy-based models: image grids, first-layer filters, training curves and the declared graph.

matplotlib is an optional dependency: install it with ``pip install "ebmgraph[plot]"``.
It is imported on the first call of a function here, never at ``import ebmgraph``.

Every function builds a :class:`matplotlib.figure.Figure` directly, without
pyplot, so it touches no global figure state and needs no display. It returns the
figure and, given ``path``, also saves it there (the format follows the file
suffix, e.g. ``.png`` or ``.pdf``).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch

from ebmgraph.graph import Graph
from ebmgraph.images import image_grid
from ebmgraph.model import EnergyModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_images", "plot_filters", "plot_training_curves", "plot_graph", "CURVE_KEYS"]

CURVE_KEYS = ("reconstruction_error", "validation_error")
"""Keys of a training-history record that :func:`plot_training_curves` draws, one panel each."""


def _new_figure(**options: Any) -> "Figure":
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "ebmgraph.plot needs matplotlib, which is not installed; "
            'install it with pip install "ebmgraph[plot]" (or pip install matplotlib)'
        ) from error
    return Figure(**options)


def _finish(figure: "Figure", path: str | os.PathLike | None) -> "Figure":
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
    return figure


def _image_shape(size: int, image_shape: Sequence[int] | None, description: str) -> tuple[int, int]:
    """Height and width of one image of ``size`` values: ``image_shape``, or a square."""
    if image_shape is not None:
        height, width = (int(d) for d in image_shape)
        if height * width != size:
            raise ValueError(f"image_shape {tuple(image_shape)} has {height * width} values, but each of the {description} has {size}")
        return height, width
    side = math.isqrt(size)
    if side * side != size:
        raise ValueError(f"each of the {description} has {size} values, which is not a square image; pass image_shape=(height, width)")
    return side, side


def _as_images(images: torch.Tensor, image_shape: Sequence[int] | None, description: str) -> torch.Tensor:
    """Reshape ``(n, size)`` or ``(n, height, width)`` data to ``(n, height, width)`` on the CPU."""
    images = torch.as_tensor(images).detach().to("cpu", torch.float64)
    if images.dim() == 3 and image_shape is None:
        return images
    if images.dim() not in (2, 3) or images.shape[0] == 0:
        raise ValueError(f"{description} must have shape (n, size) or (n, height, width) with n >= 1, got {tuple(images.shape)}")
    flat = images.reshape(images.shape[0], -1)
    height, width = _image_shape(flat.shape[1], image_shape, description)
    return flat.reshape(-1, height, width)


def plot_images(
    images: torch.Tensor,
    *,
    columns: int = 10,
    image_shape: Sequence[int] | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> "Figure":
    """Draw images with values in [0, 1] (samples, generations, data) as one greyscale grid.

    Parameters
    ----------
    images : Tensor, shape ``(n, size)`` or ``(n, height, width)``
        For example the output of :meth:`DeepRelationalModel.generate
        <ebmgraph.presets.DeepRelationalModel.generate>` or the visible layer of
        persistent chains. Values are clipped to [0, 1]; 0 is drawn black.
    columns : int
        Images per row of the grid.
    image_shape : (int, int), optional
        Height and width of one image when ``images`` is flat and not square.
    title : str, optional
    path : str or path-like, optional
        Where to save the figure.

    Returns
    -------
    matplotlib.figure.Figure
        One axes holding one image (the tiled grid).
    """
    images = _as_images(images, image_shape, "images").clamp(0, 1)
    return _grid_figure(images, columns, title, path)


def _grid_figure(images: torch.Tensor, columns: int, title: str | None, path) -> "Figure":
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    columns = min(columns, images.shape[0])
    grid = image_grid(images, columns=columns)
    height, width = grid.shape
    scale = 6.0 / max(height, width)
    figure = _new_figure(figsize=(max(width * scale, 1.0), max(height * scale, 1.0) + (0.4 if title else 0.0)))
    axes = figure.add_subplot()
    axes.imshow(grid.numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_axis_off()
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return _finish(figure, path)


def plot_filters(
    model: EnergyModel,
    visible: str | None = None,
    hidden: str | None = None,
    *,
    n_filters: int = 100,
    columns: int = 10,
    image_shape: Sequence[int] | None = None,
    path: str | os.PathLike | None = None,
) -> "Figure":
    """Draw the weights from a visible layer to each unit of a hidden layer as images (filters).

    Filter ``j`` is column ``j`` of ``model.weight(visible, hidden)``, of shape
    ``(size of visible,)``, shown as an image of the visible layer's shape.
    Each filter is scaled on its own to span black (its smallest weight) to
    white (its largest), so the figure shows the pattern of each filter, not the
    magnitudes of the weights relative to each other.

    Parameters
    ----------
    model : EnergyModel
    visible : str, optional
        The layer whose shape the filters take; the first visible layer by default.
    hidden : str, optional
        A neighbour of ``visible``; by default its first neighbour in declaration
        order (``"h1"`` for the DBM and DRM presets).
    n_filters : int
        Draw the first ``n_filters`` hidden units (all if there are fewer).
    columns : int
    image_shape : (int, int), optional
        Height and width of a filter when the visible layer is declared flat and
        not square. A layer declared with shape ``(height, width)`` needs none.
    path : str or path-like, optional

    Returns
    -------
    matplotlib.figure.Figure
        One axes holding the tiled filters.
    """
    if not isinstance(model, EnergyModel):
        raise TypeError(f"model must be an ebmgraph.EnergyModel, got {type(model).__name__}")
    graph = model.graph
    if visible is None:
        if not graph.visible:
            raise ValueError("the model declares no visible layer; pass visible=... to name the layer of the filters")
        visible = graph.visible[0]
    if hidden is None:
        hidden = graph.neighbours(visible)[0]
    if isinstance(n_filters, bool) or not isinstance(n_filters, int) or n_filters < 1:
        raise ValueError(f"n_filters must be a positive int, got {n_filters!r}")
    weight = model.weight(visible, hidden).detach().to("cpu", torch.float64)
    filters = weight.T[:n_filters]

    layer_shape = graph[visible].shape
    if image_shape is None and len(layer_shape) == 2:
        image_shape = layer_shape
    filters = _as_images(filters, image_shape, f"filters of layer {visible!r}")

    low = filters.amin(dim=(1, 2), keepdim=True)
    high = filters.amax(dim=(1, 2), keepdim=True)
    scaled = (filters - low) / (high - low).clamp_min(torch.finfo(filters.dtype).tiny)
    title = f"weights {visible}-{hidden}: {filters.shape[0]} of {graph[hidden].size} units"
    return _grid_figure(scaled, columns, title, path)


def _histories(metrics) -> list[tuple[str, list[Mapping]]]:
    """``(label, records)`` pairs from a metrics file, its parsed content, or one list of records."""
    if isinstance(metrics, (str, os.PathLike)):
        metrics = json.loads(Path(metrics).read_text())
    if isinstance(metrics, Mapping):
        results = metrics.get("results", metrics.get("rows"))
        if not isinstance(results, list):
            raise ValueError(
                "metrics must contain a list under 'results' (ebmgraph train) or 'rows' (ebmgraph compare), "
                f"got keys {sorted(metrics)}"
            )
        return [(str(result.get("family", index)), list(result.get("history") or [])) for index, result in enumerate(results)]
    if isinstance(metrics, Sequence):
        return [("training", list(metrics))]
    raise TypeError(f"metrics must be a path, a dict loaded from a metrics file, or a list of records, got {type(metrics).__name__}")


def plot_training_curves(
    metrics: str | os.PathLike | Mapping | Sequence[Mapping],
    *,
    keys: Sequence[str] = CURVE_KEYS,
    path: str | os.PathLike | None = None,
) -> "Figure":
    """Draw per-epoch figures of training runs, one panel per key and one line per run.

    Parameters
    ----------
    metrics : path, dict or list of dict
        The JSON file written by ``ebmgraph train`` (``<family>-metrics.json``) or
        ``ebmgraph compare`` (``compare.json``), its parsed content, or one
        history such as the list returned by :meth:`Trainer.fit
        <ebmgraph.learning.trainer.Trainer.fit>`. Each record of a history needs
        ``"epoch"``; runs without a history (fine-tuned networks) are skipped.
    keys : sequence of str
        Record keys to draw; a key that no record has gets no panel.
    path : str or path-like, optional

    Returns
    -------
    matplotlib.figure.Figure
        One axes per drawn key, epochs on the x axis.

    Raises
    ------
    ValueError
        When no record has an epoch and a value of any of ``keys``.
    """
    runs = [(label, records) for label, records in _histories(metrics) if records]
    present = [key for key in keys if any(key in record for _, records in runs for record in records)]
    if not present:
        raise ValueError(f"no training history in metrics has any of the keys {list(keys)}")

    figure = _new_figure(figsize=(4.5 * len(present), 3.5))
    for index, key in enumerate(present):
        axes = figure.add_subplot(1, len(present), index + 1)
        for label, records in runs:
            points = [(record["epoch"], record[key]) for record in records if key in record and record[key] is not None]
            if points:
                epochs, values = zip(*points)
                axes.plot(epochs, values, marker="o", markersize=3, label=label)
        axes.set_xlabel("epoch")
        axes.set_ylabel(key.replace("_", " "))
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return _finish(figure, path)


def _depths(graph: Graph, bottom: Sequence[str]) -> dict[str, int]:
    """Distance of each layer from the nearest layer of ``bottom``."""
    depths = nx.multi_source_dijkstra_path_length(graph.nx, list(bottom))
    deepest = max(depths.values(), default=0)
    # Layers of another connected part of an unvalidated graph go one row above the rest.
    return {name: depths.get(name, deepest + 1) for name in graph.layer_names}


def plot_graph(
    model: EnergyModel | Graph,
    *,
    bottom: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
) -> "Figure":
    """Draw a declared graph: one node per layer, one line per weight matrix.

    Layers are placed in rows by their distance from the ``bottom`` layers.
    Visible layers are drawn as squares and hidden layers as circles, each
    labelled with its name, size and unit family.

    Parameters
    ----------
    model : EnergyModel or Graph
        The declaration to draw, read from its networkx view :attr:`Graph.nx
        <ebmgraph.graph.Graph.nx>`.
    bottom : sequence of str, optional
        Layers of the bottom row; all visible layers by default (the first
        layer if none is visible). ``bottom=["x"]`` draws the DRM as a vertical
        chain with ``y`` on top.
    path : str or path-like, optional

    Returns
    -------
    matplotlib.figure.Figure
        One axes with two node collections, visible layers first (omitted when
        the graph has no visible layer), then hidden ones.
    """
    graph = model.graph if isinstance(model, EnergyModel) else model
    if not isinstance(graph, Graph):
        raise TypeError(f"model must be an ebmgraph.EnergyModel or ebmgraph.Graph, got {type(model).__name__}")
    if not graph.layer_names:
        raise ValueError("the graph declares no layers; there is nothing to draw")

    if bottom is None:
        bottom = graph.visible or graph.layer_names[:1]
    elif isinstance(bottom, str):
        bottom = [bottom]
    for name in bottom:
        graph[name]
    depths = _depths(graph, bottom)
    view = graph.nx.copy()
    nx.set_node_attributes(view, depths, "depth")
    positions = nx.multipartite_layout(view, subset_key="depth", align="horizontal")
    per_row = Counter(depths.values())

    figure = _new_figure(figsize=(max(3.0, 2.2 * max(per_row.values())), max(2.5, 1.4 * len(per_row))))
    axes = figure.add_subplot()
    nx.draw_networkx_edges(view, positions, ax=axes, width=1.5, edge_color="0.4")
    styles = [(graph.visible, "s", "#f2c14e", "visible"), (graph.hidden, "o", "#8ecae6", "hidden")]
    for names, marker, colour, label in styles:
        if names:
            nx.draw_networkx_nodes(
                view, positions, nodelist=list(names), node_shape=marker, node_color=colour,
                node_size=2600, edgecolors="0.2", ax=axes, label=label,
            )
    labels = {layer.name: f"{layer.name}\n{layer.size} {layer.units.name}" for layer in graph.layers}
    nx.draw_networkx_labels(view, positions, labels=labels, font_size=7, ax=axes)
    figure.legend(loc="lower center", ncol=2, markerscale=0.3, frameon=False, fontsize=8)
    axes.margins(0.25)
    axes.set_axis_off()
    figure.tight_layout(rect=(0.0, 0.08, 1.0, 1.0))
    return _finish(figure, path)
