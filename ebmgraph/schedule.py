"""Compile a model and a set of clamped layers into a block schedule; run Gibbs and mean field on it.

The free (unclamped) layers are partitioned into *blocks*: sets of pairwise
non-adjacent layers. The layers of one block are conditionally independent given
all other layers, so a block is updated at once. A *sweep* updates every block once,
in a fixed order. Block Gibbs sampling draws each block from its conditional; mean
field sets each block to its conditional mean given the current means of the others.

For a bipartite layer graph (RBM, DBM, DRM and every chain) there are two blocks,
the even and the odd layers. Other graphs get their blocks from a greedy colouring
of the free layers. Block order follows the distance from the *anchor* layers (the
clamped layers, or the visible layers when nothing is clamped): the block holding
the free layer nearest to the anchor comes first, so a sweep starting from data
first updates the layers that read the data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import torch

from ebmgraph.capture import CapturedCall, captured_key, check_capturable
from ebmgraph.inplace import records_gradients, run_gibbs, run_mean_field
from ebmgraph.model import EnergyModel, State
from ebmgraph.units import UnitFamily

if TYPE_CHECKING:
    from ebmgraph.chains import PersistentChains

__all__ = ["Schedule", "Block", "LayerUpdate", "compile_schedule", "MEAN_FIELD_INITS"]

MEAN_FIELD_INITS = ("zeros", "bottom_up")


@dataclass(frozen=True)
class LayerUpdate:
    """Recipe for one layer's input: its bias plus one product per neighbour.

    ``inputs`` lists ``(neighbour, weight key, transposed)``: the neighbour's
    statistic multiplies ``model.weights[key]`` (transposed when the edge was
    declared from this layer's side).
    """

    name: str
    units: UnitFamily
    inputs: tuple[tuple[str, str, bool], ...]


@dataclass(frozen=True)
class Block:
    """Layers updated together: pairwise non-adjacent, so independent given the rest."""

    layers: tuple[str, ...]
    updates: tuple[LayerUpdate, ...]


class Schedule:
    """A compiled update schedule for one model and one set of clamped layers.

    Build it with :func:`compile_schedule` or :meth:`EnergyModel.schedule`. It reads
    the model's parameters at the start of every call, so it stays valid while
    the model trains. A call that autograd does not record (grad mode off, or no
    parameter or input that requires grad) runs in preallocated buffers with
    in-place updates (:mod:`ebmgraph.inplace`); otherwise the loop below runs
    out of place so that gradients can flow through mean field.

    Attributes
    ----------
    model : EnergyModel
    clamped : tuple of str
        Layers held fixed at the values the caller passes.
    free : tuple of str
        Layers the schedule updates, in declaration order.
    blocks : tuple of Block
        The free layers, grouped and in update order.
    """

    def __init__(self, model: EnergyModel, clamped: tuple[str, ...], blocks: tuple[Block, ...]):
        self.model = model
        self.clamped = clamped
        self.blocks = blocks
        self.free = tuple(name for name in model.graph.layer_names if name not in clamped)
        self._captured: dict = {}

    def __repr__(self) -> str:
        blocks = " -> ".join("{" + ", ".join(block.layers) + "}" for block in self.blocks)
        return f"Schedule(clamped={list(self.clamped)}, blocks={blocks})"

    def sweeps_to_reach(self, source: str, target: str) -> int | None:
        """Return the minimum number of sweeps after which ``target``'s update has read the clamped ``source``.

        Free layers are taken to start without information about ``source`` (at
        zero, say). With fewer sweeps, the value of ``target`` after the last sweep
        does not depend on ``source`` at all. Returns None if no number of sweeps
        is enough (``target`` is not connected to ``source`` through free layers).
        """
        graph = self.model.graph
        informed = {source}
        for sweep in range(1, len(self.free) + 1):
            for block in self.blocks:
                informed |= {name for name in block.layers if informed.intersection(graph.neighbours(name))}
            if target in informed:
                return sweep
        return None

    # Plans: the parameter tensors of this call, looked up once ---------------------

    def _plan(self, state: State):
        """Per block, per layer: ``(name, units, base, terms)`` for this call.

        ``base`` is the bias plus the input from clamped neighbours, which stays
        fixed for the whole call, so each sweep multiplies only free neighbours.
        """
        weights = self.model.weights
        biases = self.model.biases
        graph = self.model.graph
        plan = []
        for block in self.blocks:
            entries = []
            for update in block.updates:
                base = biases[update.name]
                terms = []
                for neighbour, key, transposed in update.inputs:
                    weight = weights[key].t() if transposed else weights[key]
                    units = graph[neighbour].units
                    if neighbour in self.clamped:
                        base = torch.addmm(base, units.statistic(state[neighbour]), weight)
                    else:
                        terms.append((neighbour, units, weight))
                entries.append((update.name, update.units, base, tuple(terms)))
            plan.append(entries)
        return plan

    @staticmethod
    def _input(base, terms, state) -> torch.Tensor:
        if not terms:
            return base
        neighbour, units, weight = terms[0]
        total = torch.addmm(base, units.statistic(state[neighbour]), weight)
        for neighbour, units, weight in terms[1:]:
            total = total.addmm(units.statistic(state[neighbour]), weight)
        return total

    # Block Gibbs ----------------------------------------------------------------

    def gibbs(
        self,
        state: Mapping[str, torch.Tensor],
        steps: int = 1,
        *,
        generator: torch.Generator | None = None,
        return_means: bool = False,
        validate: bool = True,
        capture: bool = False,
    ) -> State | tuple[State, State]:
        """Run ``steps`` block-Gibbs sweeps and return the final state.

        Parameters
        ----------
        state : dict of str to Tensor, each ``(batch, size)``
            Values of every clamped layer, and initial values of the free layers. A
            free layer may be missing if the sweep order writes it before any block
            reads it (an RBM started from its visible layer needs no hidden state).
        steps : int
            Number of sweeps, at least 1.
        generator : torch.Generator, optional
            Source of every random draw.
        return_means : bool
            Also return the conditional means that the last sweep sampled from.
        validate : bool
            Check the state's layers, shapes, dtypes and values, and that every
            parameter is finite, first.
        capture : bool
            Record the call as a CUDA graph on first use and replay it afterwards
            (:mod:`ebmgraph.capture`); for small batches on a GPU. Needs a CUDA model.

        Returns
        -------
        state : dict of str to Tensor
            A sample of every layer (clamped layers unchanged).
        means : dict of str to Tensor
            Only with ``return_means``: for each free layer, the mean of the
            conditional its last sample was drawn from.
        """
        _check_steps(steps, minimum=1)
        state = self._start(state, validate)
        self._check_readable(state)
        if capture:
            return self._replay("gibbs", state, generator, steps=steps, return_means=return_means)
        if not records_gradients(self.model, state):
            return run_gibbs(self, state, steps, generator, return_means)

        plan = self._plan(state)
        means: State = {}
        for step in range(steps):
            last = step == steps - 1
            for block in plan:
                for name, units, base, terms in block:
                    layer_input = self._input(base, terms, state)
                    if last and return_means:
                        means[name] = units.mean(layer_input)
                    state[name] = units.sample(layer_input, generator)
        return (state, means) if return_means else state

    # Mean field -----------------------------------------------------------------

    def mean_field(
        self,
        state: Mapping[str, torch.Tensor],
        steps: int = 10,
        *,
        init: str | Mapping[str, torch.Tensor] = "zeros",
        damping: float = 0.0,
        validate: bool = True,
        capture: bool = False,
    ) -> State:
        """Run ``steps`` mean-field sweeps and return the means of every layer.

        Each sweep sets the blocks in order to the mean of their conditional given
        the current means of their neighbours: ``mu_l <- mean_l(b_l + sum_m t(mu_m) W_ml)``,
        blended as ``(1 - damping) * new + damping * old``.

        Parameters
        ----------
        state : dict of str to Tensor, each ``(batch, size)``
            Values of every clamped layer (samples or probabilities). A free layer
            present here starts from the given means.
        steps : int
            Number of sweeps; 0 returns the initial values.
        init : {"zeros", "bottom_up"} or dict of str to Tensor
            Start of the free layers missing from ``state``. ``"zeros"`` sets them to
            zero, so the first sweep is a pass outwards from the clamped layers with
            the farther layers silent. ``"bottom_up"`` runs one pass outwards from the
            layers with values, each layer reading only neighbours already set. A
            dict gives means per layer, of shape ``(size,)`` (the same for every row,
            e.g. a mean over training data) or ``(batch, size)``; layers it omits
            start at zero.
        damping : float in [0, 1)
            Weight of the old value in each update.
        validate : bool
            Check the state's layers, shapes, dtypes and values, and that every
            parameter is finite, first.
        capture : bool
            Record the sweeps as a CUDA graph on first use and replay it afterwards
            (:mod:`ebmgraph.capture`); the starting means are computed outside the
            graph. Needs a CUDA model.
        """
        _check_steps(steps, minimum=0)
        if not 0.0 <= damping < 1.0:
            raise ValueError(f"damping must be in [0, 1), got {damping}")
        state = self._start(state, validate)
        self._initialise_means(state, init, validate)
        if capture and steps > 0:
            return self._replay("mean_field", state, None, steps=steps, damping=damping)
        if steps > 0 and not records_gradients(self.model, state):
            return run_mean_field(self, state, steps, damping)

        plan = self._plan(state)
        for _ in range(steps):
            for block in plan:
                for name, units, base, terms in block:
                    new = units.mean(self._input(base, terms, state))
                    state[name] = new if damping == 0.0 else torch.lerp(new, state[name], damping)
        return state

    def _replay(self, kind: str, state: State, generator: torch.Generator | None, **options):
        """Run one call through its CUDA graph, recording the graph first for a new input layout."""
        check_capturable(self, state)
        key = captured_key(kind, state, generator, **options)
        call = self._captured.get(key)
        if call is None:
            if kind == "gibbs":
                run = functools.partial(run_gibbs, self, steps=options["steps"], generator=generator, return_means=options["return_means"])
            else:
                run = functools.partial(run_mean_field, self, steps=options["steps"], damping=options["damping"])
            call = self._captured[key] = CapturedCall(run, state, generator)
        return call(state)

    def _initialise_means(self, state: State, init, validate: bool) -> None:
        batch, like = _batch_of(state)
        if isinstance(init, Mapping):
            for name, means in init.items():
                if name not in self.free:
                    raise ValueError(f"init gives means for layer {name!r}, which is not a free layer of {self}")
                if name not in state:
                    state[name] = self._broadcast_means(name, means, batch, like, validate)
            policy = "zeros"
        elif init in MEAN_FIELD_INITS:
            policy = init
        else:
            raise ValueError(f"init must be one of {MEAN_FIELD_INITS} or a dict of per-layer means, got {init!r}")

        if policy == "bottom_up":
            self._bottom_up_pass(state)
        for name in self.free:
            if name not in state:
                state[name] = like.new_zeros(batch, self.model.graph[name].size)

    def _broadcast_means(self, name: str, means: torch.Tensor, batch: int, like: torch.Tensor, validate: bool) -> torch.Tensor:
        size = self.model.graph[name].size
        if not isinstance(means, torch.Tensor):
            raise TypeError(f"init for layer {name!r} must be a torch.Tensor, got {type(means).__name__}")
        means = means.to(like)
        if means.dim() == 1 and means.shape[0] == size:
            means = means.unsqueeze(0).expand(batch, size)
        elif not (means.dim() == 2 and tuple(means.shape) == (batch, size)):
            raise ValueError(
                f"init for layer {name!r} must have shape ({size},) or ({batch}, {size}), got {tuple(means.shape)}"
            )
        if validate:
            self.model.graph[name].units.check_support(means, layer=name, allow_means=True)
        return means

    def _bottom_up_pass(self, state: State) -> None:
        """Set missing layers outwards, level by level of distance from the layers with values.

        A layer reads only layers of smaller distance (or with given values), so
        the pass does not depend on the order within a level.
        """
        graph = self.model.graph
        batch = _batch_of(state)[0]
        sources = [name for name in graph.layer_names if name in state]
        distance = nx.multi_source_dijkstra_path_length(graph.nx, sources)
        levels: dict[int, list[str]] = {}
        for name in graph.layer_names:
            if name not in state and name in distance:
                levels.setdefault(distance[name], []).append(name)
        for level in sorted(levels):
            updates = {}
            for name in levels[level]:
                total = self.model.biases[name]
                for m in graph.neighbours(name):
                    if m in state:
                        total = total + graph[m].units.statistic(state[m]) @ self.model.weight(m, name)
                updates[name] = graph[name].units.mean(total.expand(batch, -1))
            state.update(updates)

    # Shared checks --------------------------------------------------------------

    def _start(self, state: Mapping[str, torch.Tensor], validate: bool) -> State:
        if validate:
            state = self.model.check_state(state, required=self.clamped)
            self.model.check_parameters()
        else:
            state = dict(state)
        if not state:
            raise ValueError(f"the state is empty; {self} needs at least the clamped layers or one free layer")
        return state

    def _check_readable(self, state: State) -> None:
        available = set(state)
        for block in self.blocks:
            for update in block.updates:
                for neighbour, _, _ in update.inputs:
                    if neighbour not in available:
                        raise ValueError(
                            f"layer {update.name!r} is sampled before its neighbour {neighbour!r} has a value; "
                            f"pass an initial state for {neighbour!r} (blocks run in the order {self})"
                        )
            available.update(block.layers)

    def init_chains(
        self,
        n_chains: int,
        *,
        generator: torch.Generator | None = None,
        clamped_state: Mapping[str, torch.Tensor] | None = None,
    ) -> PersistentChains:
        """Start persistent chains: each free layer drawn from its biases-only conditional.

        Returns a :class:`~ebmgraph.chains.PersistentChains`.
        """
        from ebmgraph.chains import PersistentChains

        return PersistentChains.from_biases(self, n_chains, generator=generator, clamped_state=clamped_state)


def compile_schedule(
    model: EnergyModel,
    clamped: Iterable[str] = (),
    *,
    blocks: Sequence[Sequence[str]] | None = None,
) -> Schedule:
    """Compile ``model`` with the layers in ``clamped`` held fixed into a :class:`Schedule`.

    Parameters
    ----------
    model : EnergyModel
    clamped : iterable of str
        Names of the clamped layers.
    blocks : sequence of sequences of str, optional
        An explicit grouping of the free layers, in update order. It must cover
        every free layer once and put no two adjacent layers in one block.
    """
    graph = model.graph
    clamped = tuple(name for name in graph.layer_names if name in set(_check_names(graph, clamped, "clamped")))
    free = tuple(name for name in graph.layer_names if name not in clamped)
    if not free:
        raise ValueError("every layer is clamped; a schedule needs at least one free layer")

    groups = _check_blocks(graph, free, blocks) if blocks is not None else _colour(graph, clamped, free)
    compiled = tuple(Block(layers=group, updates=tuple(_layer_update(model, name) for name in group)) for group in groups)
    return Schedule(model, clamped, compiled)


def _layer_update(model: EnergyModel, name: str) -> LayerUpdate:
    inputs = []
    for neighbour in model.graph.neighbours(name):
        if model.edge_key(neighbour, name) in model.weights:
            inputs.append((neighbour, model.edge_key(neighbour, name), False))
        else:
            inputs.append((neighbour, model.edge_key(name, neighbour), True))
    return LayerUpdate(name=name, units=model.graph[name].units, inputs=tuple(inputs))


def _check_names(graph, names: Iterable[str], argument: str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    names = list(names)
    for name in names:
        if name not in graph:
            raise ValueError(f"{argument} names unknown layer {name!r}; declared layers are {list(graph.layer_names)}")
    return names


def _check_blocks(graph, free: tuple[str, ...], blocks) -> tuple[tuple[str, ...], ...]:
    groups = tuple(tuple(_check_names(graph, block, "blocks")) for block in blocks)
    if any(not group for group in groups):
        raise ValueError("blocks must not contain an empty block")
    seen = [name for group in groups for name in group]
    if sorted(seen) != sorted(free):
        raise ValueError(f"blocks must list every free layer exactly once; free layers are {list(free)}, blocks list {seen}")
    for group in groups:
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if graph.nx.has_edge(a, b):
                    raise ValueError(f"layers {a!r} and {b!r} are joined by an edge, so they cannot share a block")
    return groups


def _colour(graph, clamped: tuple[str, ...], free: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Group the free layers into blocks; the block with the layer nearest the anchor first."""
    anchor = list(clamped) or list(graph.visible) or [graph.layer_names[0]]
    distance = nx.multi_source_dijkstra_path_length(graph.nx, anchor)
    order = {name: i for i, name in enumerate(graph.layer_names)}

    def key(name: str):
        nearness = math.inf if name in anchor else distance.get(name, math.inf)
        return (nearness, order[name])

    sub = graph.nx.subgraph(free)
    if nx.is_bipartite(sub):
        colours = {}
        for component in nx.connected_components(sub):
            start = min(component, key=key)
            for name, depth in nx.single_source_shortest_path_length(sub, start).items():
                colours[name] = depth % 2
    else:
        colours = nx.greedy_color(sub, strategy=lambda g, _: sorted(g, key=key))

    groups = {}
    for name in sorted(free, key=key):
        groups.setdefault(colours[name], []).append(name)
    return tuple(tuple(sorted(group, key=order.get)) for group in groups.values())


def _batch_of(state: State) -> tuple[int, torch.Tensor]:
    tensor = next(iter(state.values()))
    return tensor.shape[0], tensor


def _check_steps(steps: int, *, minimum: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < minimum:
        raise ValueError(f"steps must be an int >= {minimum}, got {steps!r}")
