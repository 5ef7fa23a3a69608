"""The energy model: one bias per layer, one weight matrix per edge, and the energy they define."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from ebmgraph.graph import Graph, UnknownLayerError
from ebmgraph.units import UnitFamily

if TYPE_CHECKING:
    from ebmgraph.schedule import Schedule

__all__ = ["EnergyModel", "Conditional", "State"]

State = dict[str, torch.Tensor]
"""A state of some or all layers: layer name to a tensor of shape ``(batch, size)``."""


class Conditional:
    """The distribution of one layer given the states of all its neighbours.

    Parameters
    ----------
    units : UnitFamily
        The family of the layer.
    input : Tensor, shape ``(batch, size)``
        The layer's bias plus the weighted statistics of its neighbours.
    """

    def __init__(self, units: UnitFamily, input: torch.Tensor):
        self.units = units
        self.input = input

    @property
    def mean(self) -> torch.Tensor:
        """Expected state, shape ``(batch, size)``."""
        return self.units.mean(self.input)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one state per row, shape ``(batch, size)``."""
        return self.units.sample(self.input, generator)

    def log_partition(self) -> torch.Tensor:
        """Log-normaliser of the layer, shape ``(batch,)``."""
        return self.units.log_partition(self.input)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability (or density) of ``value``, shape ``(batch,)``; ``value`` must be a valid state."""
        if not isinstance(value, torch.Tensor) or value.shape != self.input.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"log_prob expects a state of shape {tuple(self.input.shape)}, got {shape}")
        self.units.check_support(value, layer="value", allow_means=False)
        linear = (self.units.statistic(value) * self.input).sum(dim=-1)
        return linear - self.units.self_energy(value) - self.log_partition()

    def __repr__(self) -> str:
        return f"Conditional(units={self.units!r}, input shape={tuple(self.input.shape)})"


class EnergyModel(nn.Module):
    r"""An energy-based model over a declared layered graph.

    The energy of a state ``s`` (one tensor per layer) is

    .. math::

        E(s) = \sum_l \big(\mathrm{self}_l(s_l) - b_l \cdot t_l(s_l)\big)
               - \sum_{(l, m)} t_l(s_l)^\top W_{lm}\, t_m(s_m)

    with the unit families' sufficient statistics ``t`` and self-energies (the
    identity and zero for Bernoulli, spin and softmax units, so the energy is
    ``-sum b.s - sum s_l^T W s_m``), and ``p(s) = exp(-E(s)) / Z``.

    Parameters
    ----------
    graph : Graph
        The declaration; it is validated here.
    init_std : float
        Standard deviation of the normal initial weights. Biases start at zero.
    generator : torch.Generator, optional
        Source of the initial weights, for reproducible construction.
    dtype : torch.dtype
        ``torch.float32`` (default) or ``torch.float64``.
    device : torch.device or str, optional

    Attributes
    ----------
    biases : nn.ParameterDict
        ``biases[name]`` has shape ``(size,)``.
    weights : nn.ParameterDict
        ``weights["a-b"]`` has shape ``(size of a, size of b)`` for the edge declared
        as ``(a, b)``; :meth:`weight` returns it in either orientation.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be an ebmgraph.Graph, got {type(graph).__name__}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype such as torch.float32, got {dtype!r}")
        if isinstance(init_std, bool) or not isinstance(init_std, (int, float)):
            raise TypeError(f"init_std must be a number, got {type(init_std).__name__}")
        if not (init_std >= 0 and math.isfinite(init_std)):
            raise ValueError(f"init_std must be a non-negative finite number, got {init_std}")
        graph.validate()
        # A private copy, so later declarations on the caller's graph cannot desynchronise the parameters.
        self.graph = graph.copy()
        self._schedules: dict = {}

        self.biases = nn.ParameterDict(
            {layer.name: nn.Parameter(torch.zeros(layer.size, dtype=dtype, device=device)) for layer in graph.layers}
        )
        weights = {}
        for a, b in graph.edges:
            shape = (graph[a].size, graph[b].size)
            if init_std == 0:
                initial = torch.zeros(shape, dtype=dtype)
            else:
                where = None if generator is None else generator.device
                initial = torch.randn(shape, generator=generator, dtype=dtype, device=where) * init_std
            weights[self.edge_key(a, b)] = nn.Parameter(initial.to(device))
        self.weights = nn.ParameterDict(weights)

    # Parameters ---------------------------------------------------------------

    @staticmethod
    def edge_key(a: str, b: str) -> str:
        """Key of the edge declared as ``(a, b)`` in :attr:`weights`."""
        return f"{a}-{b}"

    def weight(self, a: str, b: str) -> torch.Tensor:
        """Weight between ``a`` and ``b``, shape ``(size of a, size of b)``, whichever way it was declared."""
        if self.edge_key(a, b) in self.weights:
            return self.weights[self.edge_key(a, b)]
        if self.edge_key(b, a) in self.weights:
            return self.weights[self.edge_key(b, a)].t()
        self.graph[a]
        self.graph[b]
        raise UnknownLayerError(f"no edge between layers {a!r} and {b!r}; edges are {list(self.graph.edges)}")

    def bias(self, name: str) -> torch.Tensor:
        """Bias of layer ``name``, shape ``(size,)``."""
        self.graph[name]
        return self.biases[name]

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.biases.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.biases.values())).device

    def check_parameters(self) -> None:
        """Raise ``ValueError`` naming the first parameter and index that is NaN or infinite.

        A single infinite weight makes every input it reaches NaN (``0 * inf``), so
        the public entry points call this before computing anything from the
        parameters. The check reads one flag per parameter back from the device.
        """
        for name, parameter in self.named_parameters():
            bad = ~torch.isfinite(parameter.detach())
            if bool(bad.any()):
                index = tuple(int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    f"parameter {name} contains NaN or infinite values (first at index {index}: "
                    f"{parameter[index].item()}); the model has diverged, so reload a checkpoint saved before"
                )

    # States -------------------------------------------------------------------

    def check_state(
        self,
        state: Mapping[str, torch.Tensor],
        *,
        required: Iterable[str] = (),
        allow_means: bool = True,
    ) -> State:
        """Validate a state and return it with every tensor flattened to ``(batch, size)``.

        Raises ``ValueError`` or ``TypeError`` naming the layer when a key is not a
        layer or a required layer is missing. The same holds when a tensor has the
        wrong width, dtype or device, or when batch sizes disagree. Values must be
        finite and inside the layer's unit family (samples only when
        ``allow_means`` is false). A batch of 0 rows passes, so per-row results
        are simply empty. Training and the sufficient statistics, which average
        over rows, reject it.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"a state must be a mapping from layer name to tensor, got {type(state).__name__}")
        missing = [name for name in required if name not in state]
        if missing:
            raise ValueError(f"state is missing layer {missing[0]!r}; it has {sorted(state)}")

        checked: State = {}
        batch = None
        for name, tensor in state.items():
            if name not in self.graph:
                raise ValueError(f"state has unknown layer {name!r}; declared layers are {list(self.graph.layer_names)}")
            tensor = self._flatten(name, tensor)
            if batch is None:
                batch = (name, tensor.shape[0])
            elif tensor.shape[0] != batch[1]:
                raise ValueError(
                    f"layer {name!r} has batch size {tensor.shape[0]} but layer {batch[0]!r} has {batch[1]}"
                )
            self.graph[name].units.check_support(tensor, layer=name, allow_means=allow_means)
            checked[name] = tensor
        return checked

    def _flatten(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        layer = self.graph[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"layer {name!r}: expected a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype != self.dtype:
            raise TypeError(
                f"layer {name!r}: expected dtype {self.dtype} (the model's), got {tensor.dtype}; "
                f"convert with .to({self.dtype})"
            )
        if tensor.device != self.device:
            raise ValueError(f"layer {name!r}: expected a tensor on {self.device} (the model's device), got {tensor.device}")
        if tensor.dim() == 2 and tensor.shape[1] == layer.size:
            return tensor
        if tensor.dim() == 1 + len(layer.shape) and tuple(tensor.shape[1:]) == layer.shape:
            return tensor.reshape(tensor.shape[0], layer.size)
        raise ValueError(
            f"layer {name!r}: expected shape (batch, {layer.size})"
            + (f" or (batch, {', '.join(map(str, layer.shape))})" if len(layer.shape) > 1 else "")
            + f", got {tuple(tensor.shape)}"
        )

    # Energy, conditionals, free energy ----------------------------------------

    def input(self, name: str, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Input to layer ``name``: its bias plus the weighted statistics of its neighbours.

        ``state`` must hold every neighbour of ``name``. Shape ``(batch, size)``.
        """
        neighbours = self.graph.neighbours(name)
        missing = [m for m in neighbours if m not in state]
        if missing:
            raise ValueError(f"the input to layer {name!r} needs its neighbour {missing[0]!r}, which the state lacks")
        total = self.biases[name]
        for m in neighbours:
            statistic = self.graph[m].units.statistic(state[m])
            total = total + statistic @ self.weight(m, name)
        return total

    def conditional(self, name: str, state: Mapping[str, torch.Tensor]) -> Conditional:
        """Distribution of layer ``name`` given its neighbours in ``state``."""
        state = self.check_state(state)
        self.check_parameters()
        return Conditional(self.graph[name].units, self.input(name, state))

    def energy(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Energy of a full state (every layer present), shape ``(batch,)``."""
        state = self.check_state(state, required=self.graph.layer_names)
        self.check_parameters()
        return self._energy_terms(state, kept=self.graph.layer_names)

    def _energy_terms(self, state: State, kept: Iterable[str]) -> torch.Tensor:
        kept = set(kept)
        statistics = {name: self.graph[name].units.statistic(state[name]) for name in kept}
        total = 0.0
        for name in self.graph.layer_names:
            if name in kept:
                units = self.graph[name].units
                total = total + units.self_energy(state[name]) - statistics[name] @ self.biases[name]
        for a, b in self.graph.edges:
            if a in kept and b in kept:
                total = total - ((statistics[a] @ self.weights[self.edge_key(a, b)]) * statistics[b]).sum(dim=-1)
        return total

    def free_energy(self, state: Mapping[str, torch.Tensor], summed_out: Iterable[str] | None = None) -> torch.Tensor:
        """Free energy with some layers summed out analytically, shape ``(batch,)``.

        ``F(s_kept) = -log sum over the summed-out layers of exp(-E(s))``, so
        ``p(s_kept) = exp(-F(s_kept)) / Z``.

        Parameters
        ----------
        state : dict of str to Tensor
            States of the kept layers.
        summed_out : iterable of str, optional
            Layers to sum out. They must be pairwise non-adjacent, since a layer can
            be summed out in closed form only while all its neighbours are fixed. By
            default every layer missing from ``state``.
        """
        names = self.graph.layer_names
        if isinstance(summed_out, str):
            summed_out = [summed_out]
        summed = [name for name in names if name not in state] if summed_out is None else list(summed_out)
        for name in summed:
            self.graph[name]
        for i, a in enumerate(summed):
            for b in summed[i + 1 :]:
                if self.graph.nx.has_edge(a, b):
                    raise ValueError(
                        f"cannot sum out layers {a!r} and {b!r} together: they are joined by an edge, "
                        "and a layer is summed out analytically only when all its neighbours are kept"
                    )
        kept = [name for name in names if name not in summed]
        state = self.check_state({name: state[name] for name in state if name in kept}, required=kept)
        self.check_parameters()

        free = self._energy_terms(state, kept=kept)
        for name in summed:
            free = free - self.graph[name].units.log_partition(self.input(name, state))
        return free

    def schedule(self, clamped: Iterable[str] = ()) -> Schedule:
        """Return the compiled :class:`~ebmgraph.schedule.Schedule` for ``clamped``, cached per set of layers."""
        from ebmgraph.schedule import compile_schedule

        names = (clamped,) if isinstance(clamped, str) else tuple(clamped)
        key = frozenset(names)
        if key not in self._schedules:
            self._schedules[key] = compile_schedule(self, names)
        return self._schedules[key]

    def extra_repr(self) -> str:
        return repr(self.graph)

    def _apply(self, fn, recurse=True):
        self._schedules.clear()
        return super()._apply(fn, recurse)
