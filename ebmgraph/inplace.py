"""Run schedule calls in preallocated buffers when autograd records nothing.

:meth:`Schedule.gibbs <ebmgraph.schedule.Schedule.gibbs>` and
:meth:`Schedule.mean_field <ebmgraph.schedule.Schedule.mean_field>` come here
unless a gradient is being recorded (grad mode on and a parameter or state
tensor that requires grad). A call allocates, per free layer, one value buffer
``(batch, size)`` that its sweeps overwrite, plus an input buffer and 16-bit
random digits for block Gibbs or damped mean field. Working memory is therefore
linear in batch times units. Every product is written by ``addmm(..., out=)``
or ``addmm_``, every mean and draw in place, so a sweep allocates nothing and
issues about three operations per layer and neighbour, with no read-back from
the device.

The results equal those of the out-of-place loop in :mod:`ebmgraph.schedule`
(same operations in the same order, the same random draws), which the tests
check value for value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ebmgraph.model import EnergyModel, State
from ebmgraph.sampling import BulkWords, bulk_words, needs_word_scratch
from ebmgraph.units import UnitFamily

__all__ = ["fill_input", "records_gradients", "run_gibbs", "run_mean_field"]


@dataclass(frozen=True, slots=True)
class LayerStep:
    """One layer's update within a call, bound to the call's buffers.

    ``terms`` lists ``(neighbour value buffer, neighbour units, weight)`` for the
    free neighbours; the clamped ones are already in ``base``.
    """

    name: str
    units: UnitFamily
    base: torch.Tensor
    terms: tuple[tuple[torch.Tensor, UnitFamily, torch.Tensor], ...]
    value: torch.Tensor
    scratch: torch.Tensor | None
    words: BulkWords | None


def records_gradients(model: EnergyModel, state: State) -> bool:
    """Return True if autograd would record a call on ``model`` and ``state`` (in-place updates would break it)."""
    if not torch.is_grad_enabled():
        return False
    return any(p.requires_grad for p in model.parameters()) or any(t.requires_grad for t in state.values())


def run_gibbs(schedule, state: State, steps: int, generator: torch.Generator | None, return_means: bool):
    """Run ``steps`` block-Gibbs sweeps in buffers; arguments and results as :meth:`Schedule.gibbs`."""
    layer_steps = _bind(schedule, state, keep=_read_before_written(schedule), scratch=True)
    means: State = {}
    for sweep in range(steps):
        record = return_means and sweep == steps - 1
        for step in layer_steps:
            layer_input = fill_input(step.scratch, step.base, step.terms)
            if record:
                means[step.name] = step.units.mean(layer_input)
            step.units.sample_(layer_input, generator, out=step.value, words=step.words)
    state.update((step.name, step.value) for step in layer_steps)
    return (state, means) if return_means else state


def run_mean_field(schedule, state: State, steps: int, damping: float) -> State:
    """Run ``steps`` mean-field sweeps in buffers; arguments and result as :meth:`Schedule.mean_field`.

    Without damping a layer's new mean is computed in its own value buffer,
    because its input never reads the layer itself. With damping the input goes
    to a scratch buffer and ``value <- lerp(mean, value, damping)``.
    """
    damped = damping != 0.0
    keep = schedule.free if damped else _read_before_written(schedule)
    layer_steps = _bind(schedule, state, keep=keep, scratch=damped)
    for _ in range(steps):
        for step in layer_steps:
            if damped:
                mean = step.units.mean_(fill_input(step.scratch, step.base, step.terms))
                torch.lerp(mean, step.value, damping, out=step.value)
            else:
                layer_input = fill_input(step.value, step.base, step.terms)
                mean = step.units.mean_(layer_input)
                if mean is not layer_input:
                    layer_input.copy_(mean)
    state.update((step.name, step.value) for step in layer_steps)
    return state


def fill_input(target: torch.Tensor, base: torch.Tensor, terms) -> torch.Tensor:
    """Write a layer's input ``base + sum of t(neighbour) @ W`` to ``target`` and return it.

    Parameters
    ----------
    target : Tensor, ``(batch, size)``
        Receives the input. It must not share memory with a neighbour's value.
    base : Tensor, ``(size,)`` or ``(batch, size)``
        The bias, or the bias plus the input from clamped neighbours.
    terms : sequence of ``(value, units, weight)``
        Per neighbour its ``(batch, size of neighbour)`` value, its unit family
        (for the statistic ``t``) and the ``(size of neighbour, size)`` weight.
        One ``addmm`` each.
    """
    if not terms:
        return target.copy_(base)
    source, units, weight = terms[0]
    torch.addmm(base, units.statistic(source), weight, out=target)
    for source, units, weight in terms[1:]:
        target.addmm_(units.statistic(source), weight)
    return target


def _read_before_written(schedule) -> tuple[str, ...]:
    """Free layers whose starting value a sweep reads: all but those of the first block."""
    first = set(schedule.blocks[0].layers)
    return tuple(name for name in schedule.free if name not in first)


def _bind(schedule, state: State, *, keep: Iterable[str], scratch: bool) -> list[LayerStep]:
    """Allocate the call's buffers and bind every layer update to them, in sweep order.

    The free layers named in ``keep`` start from a copy of their value in
    ``state``; the caller's tensors are never written.
    """
    graph = schedule.model.graph
    like = next(iter(state.values()))
    batch = like.shape[0]
    keep = set(keep)
    plan = schedule._plan(state)

    values = {}
    for block in plan:
        for name, _, _, _ in block:
            buffer = like.new_empty(batch, graph[name].size)
            if name in keep and name in state:
                buffer.copy_(state[name])
            values[name] = buffer

    layer_steps = []
    for block in plan:
        for name, units, base, terms in block:
            value = values[name]
            words = bulk_words(value.numel(), value.device) if scratch and needs_word_scratch(value) else None
            layer_steps.append(
                LayerStep(
                    name=name,
                    units=units,
                    base=base,
                    terms=tuple((values[neighbour], family, weight) for neighbour, family, weight in terms),
                    value=value,
                    scratch=torch.empty_like(value) if scratch else None,
                    words=words,
                )
            )
    return layer_steps
