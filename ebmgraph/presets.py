"""Presets: the restricted Boltzmann machine, the deep Boltzmann machine and the deep relational model.

Each preset only declares a graph through the public API and builds an
:class:`~ebmgraph.model.EnergyModel` on it; the engine has no special case for any.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ebmgraph.graph import Graph, GraphError
from ebmgraph.model import EnergyModel
from ebmgraph.units import UnitFamily

__all__ = ["rbm", "dbm", "drm", "DeepRelationalModel"]


def rbm(
    n_visible: int | Sequence[int],
    n_hidden: int,
    *,
    visible_units: str | UnitFamily = "bernoulli",
    hidden_units: str | UnitFamily = "bernoulli",
    **model_options: Any,
) -> EnergyModel:
    r"""Build a restricted Boltzmann machine with layers ``"v"`` (visible) and ``"h"``.

    .. math:: E(v, h) = -b_v \cdot v - b_h \cdot h - v^\top W h

    ``model_options`` go to :class:`~ebmgraph.model.EnergyModel` (``init_std``,
    ``generator``, ``dtype``, ``device``).
    """
    graph = Graph()
    graph.add_layer("v", n_visible, visible_units, visible=True)
    graph.add_layer("h", n_hidden, hidden_units)
    graph.add_edge("v", "h")
    return EnergyModel(graph, **model_options)


def dbm(
    sizes: Sequence[int],
    *,
    visible_units: str | UnitFamily = "bernoulli",
    hidden_units: str | UnitFamily = "bernoulli",
    **model_options: Any,
) -> EnergyModel:
    r"""Build a deep Boltzmann machine: a chain ``v - h1 - ... - hL`` with ``sizes = (n_visible, n_h1, ..., n_hL)``.

    .. math:: E = -\sum_l b_l \cdot s_l - v^\top W_1 h_1 - \sum_{l>1} h_{l-1}^\top W_l h_l
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"dbm needs a visible size and at least one hidden size, got sizes={sizes}")
    graph = Graph()
    graph.add_layer("v", sizes[0], visible_units, visible=True)
    previous = "v"
    for index, size in enumerate(sizes[1:], start=1):
        graph.add_layer(f"h{index}", size, hidden_units)
        graph.add_edge(previous, f"h{index}")
        previous = f"h{index}"
    return EnergyModel(graph, **model_options)


def drm(
    x: int | Sequence[int] = 784,
    hidden: Sequence[int] = (400, 400),
    y: int = 10,
    *,
    x_units: str | UnitFamily = "bernoulli",
    hidden_units: str | UnitFamily = "bernoulli",
    y_units: str | UnitFamily = "bernoulli",
    **model_options: Any,
) -> "DeepRelationalModel":
    """Build a deep relational model: hidden layers ``h1 .. hL`` between two visible layers ``x`` and ``y``.

    Parameters
    ----------
    x : int or tuple of int
        Size or shape of the data layer, e.g. 784 or ``(28, 28)``.
    hidden : sequence of int
        Sizes of ``h1 .. hL``, ``h1`` next to ``x``; at least one.
    y : int
        Size of the label layer (number of classes).
    y_units : {"bernoulli", "softmax"} or UnitFamily
        ``"bernoulli"`` follows Nakashika et al. (sigmoid label units);
        ``"softmax"`` makes the label one categorical variable.
    model_options
        ``init_std``, ``generator``, ``dtype``, ``device`` of
        :class:`~ebmgraph.model.EnergyModel`.
    """
    hidden = list(hidden)
    if not hidden:
        raise ValueError("drm needs at least one hidden layer, got hidden=()")
    graph = Graph()
    graph.add_layer("x", x, x_units, visible=True)
    previous = "x"
    for index, size in enumerate(hidden, start=1):
        graph.add_layer(f"h{index}", size, hidden_units)
        graph.add_edge(previous, f"h{index}")
        previous = f"h{index}"
    graph.add_layer("y", y, y_units, visible=True)
    graph.add_edge(previous, "y")
    return DeepRelationalModel(graph, **model_options)


class DeepRelationalModel(EnergyModel):
    r"""The deep relational model of Nakashika, Takiguchi and Ariki.

    "Modeling deep bidirectional relationships for image classification and
    generation" (ICASSP 2015). Hidden layers ``h1 .. hL`` sit between the data
    layer ``x`` and the label layer ``y``, with undirected weights between
    adjacent layers:

    .. math::

        E(x, h, y) = -b_x \cdot x - \sum_l b_l \cdot h_l - b_y \cdot y
                     - x^\top W_1 h_1 - \sum_{l=2}^{L} h_{l-1}^\top W_l h_l - h_L^\top W_{L+1} y

    Classification clamps ``x`` and reads ``E[y]`` after mean field
    (:meth:`predict`); generation clamps ``y`` and reads ``E[x]``
    (:meth:`generate`). Build one with :func:`drm`, or pass any graph with
    visible layers ``x`` and ``y``; the other layers are its hidden layers.
    """

    def __init__(self, graph: Graph, **options):
        super().__init__(graph, **options)
        missing = [name for name in ("x", "y") if name not in self.graph.visible]
        if missing:
            raise GraphError(
                f"a DeepRelationalModel needs visible layers 'x' (data) and 'y' (labels), but {missing[0]!r} is not one; "
                f"the graph's visible layers are {list(self.graph.visible)}"
            )

    @property
    def hidden_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.graph.layer_names if name not in ("x", "y"))

    @property
    def n_classes(self) -> int:
        return self.graph["y"].size

    def predict(self, x: torch.Tensor, steps: int = 10, *, init: str = "zeros", damping: float = 0.0) -> torch.Tensor:
        """Expected label ``E[y | x]`` after ``steps`` mean-field sweeps with ``x`` clamped.

        Parameters
        ----------
        x : Tensor, shape ``(batch, size of x)`` or ``(batch, *shape of x)``
            Data, as samples or probabilities in the family's range.
        steps : int
            Mean-field sweeps, T = 10 by default as in the paper.

        Returns
        -------
        Tensor, shape ``(batch, n_classes)``
            Computed without autograd; run :meth:`Schedule.mean_field` directly to
            differentiate through the read-out.
        """
        _check_sweeps(steps)
        schedule = self.schedule(("x",))
        _check_reach(schedule, "x", "y", steps, init)
        with torch.no_grad():
            return schedule.mean_field({"x": x}, steps, init=init, damping=damping)["y"]

    def classify(self, x: torch.Tensor, steps: int = 10) -> torch.Tensor:
        """Predicted class index, the argmax of :meth:`predict`, shape ``(batch,)``, dtype int64."""
        return self.predict(x, steps).argmax(dim=-1)

    def generate(
        self,
        y: torch.Tensor,
        steps: int = 10,
        *,
        hidden_means: Mapping[str, torch.Tensor] | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Data for labels ``y``: mean field with ``y`` clamped, then ``E[x]`` or a draw of ``x``.

        The generation scheme of the DRM paper starts the hidden layers at their
        means over the training data (pass them as ``hidden_means``).

        Parameters
        ----------
        y : Tensor
            Class indices of shape ``(batch,)`` (an integer dtype) or label rows of
            shape ``(batch, n_classes)``.
        steps : int
            Mean-field sweeps.
        hidden_means : dict of str to Tensor, optional
            Starting means of hidden layers, each ``(size,)`` or ``(batch, size)``;
            omitted layers start at zero.
        sample : bool
            Return a draw from ``p(x | neighbours of x)`` at their means instead of ``E[x]``.
        generator : torch.Generator, optional
            Source of the draw when ``sample`` is true.

        Returns
        -------
        Tensor, shape ``(batch, size of x)``
        """
        _check_sweeps(steps)
        y = self._label_rows(y)
        schedule = self.schedule(("y",))
        # Starting means may carry the label themselves (per-label means), so only a start from zeros is checked.
        _check_reach(schedule, "y", "x", steps, "zeros" if not hidden_means else "given")
        with torch.no_grad():
            means = schedule.mean_field({"y": y}, steps, init=dict(hidden_means or {}))
            if not sample:
                return means["x"]
            # Every neighbour of x counts, whatever the graph names its layers and however many join x.
            return self.conditional("x", means).sample(generator)

    def _label_rows(self, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor of class indices or label rows, got {type(y).__name__}")
        if y.dtype.is_floating_point:
            return y
        if y.dim() != 1:
            raise ValueError(f"integer y must be class indices of shape (batch,), got shape {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ValueError(f"class indices must lie in [0, {self.n_classes - 1}], got values from {int(y.min())} to {int(y.max())}")
        return torch.nn.functional.one_hot(y.long(), self.n_classes).to(dtype=self.dtype, device=self.device)


def _check_reach(schedule, source: str, target: str, steps: int, init) -> None:
    """Raise ValueError if ``steps`` sweeps from zeros leave ``target`` independent of ``source``."""
    if init != "zeros":
        return
    needed = schedule.sweeps_to_reach(source, target)
    if needed is not None and steps < needed:
        raise ValueError(
            f"steps={steps} mean-field sweeps from zeros leave {target!r} independent of {source!r}, because the "
            f"schedule {schedule} carries {source!r} to {target!r} only in sweep {needed}; pass steps >= {needed}"
        )


def _check_sweeps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int (mean-field sweeps), got {steps!r}")
