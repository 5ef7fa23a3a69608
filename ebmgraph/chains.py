"""Persistent Markov chains: a sampler state that survives between calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from ebmgraph.model import State

if TYPE_CHECKING:
    from ebmgraph.schedule import Schedule

__all__ = ["PersistentChains"]


class PersistentChains:
    """A batch of block-Gibbs chains kept between calls, as persistent contrastive divergence needs.

    The state is an explicit value (:attr:`state`): :meth:`advance` replaces it
    with the state after more sweeps, and :meth:`state_dict` /
    :meth:`load_state_dict` save and restore it.

    Parameters
    ----------
    schedule : Schedule
        The compiled schedule the chains run on.
    state : dict of str to Tensor, each ``(n_chains, size)``
        A value for every layer of the model: a sample (for example 0 or 1,
        never 0.5, for Bernoulli units) for every free layer, and a sample or
        mean for the clamped layers.
    """

    def __init__(self, schedule: Schedule, state: Mapping[str, torch.Tensor]):
        self.schedule = schedule
        self.state: State = _check_chain_state(schedule, state)
        self.n_sweeps = 0

    @classmethod
    def from_biases(
        cls,
        schedule: Schedule,
        n_chains: int,
        *,
        generator: torch.Generator | None = None,
        clamped_state: Mapping[str, torch.Tensor] | None = None,
    ) -> "PersistentChains":
        """Start ``n_chains`` chains with each free layer drawn from its biases-only conditional.

        ``clamped_state`` gives the clamped layers, each of shape ``(n_chains, size)``.
        """
        if isinstance(n_chains, bool) or not isinstance(n_chains, int) or n_chains < 1:
            raise ValueError(f"n_chains must be a positive int, got {n_chains!r}")
        model = schedule.model
        state = dict(model.check_state(clamped_state or {}, required=schedule.clamped))
        extra = [name for name in state if name not in schedule.clamped]
        if extra:
            raise ValueError(f"clamped_state gives layer {extra[0]!r}, which is free in {schedule}; pass only clamped layers")
        for name in schedule.free:
            layer = model.graph[name]
            bias_input = model.biases[name].detach().expand(n_chains, layer.size)
            state[name] = layer.units.sample(bias_input, generator)
        return cls(schedule, state)

    @property
    def n_chains(self) -> int:
        return next(iter(self.state.values())).shape[0]

    def advance(
        self, steps: int = 1, *, generator: torch.Generator | None = None, return_means: bool = False
    ) -> State | tuple[State, State]:
        """Run ``steps`` sweeps from the current state, store and return the new state.

        With ``return_means`` also return the means of the last sweep's conditionals
        (see :meth:`Schedule.gibbs`).
        """
        with torch.no_grad():
            result = self.schedule.gibbs(self.state, steps, generator=generator, return_means=return_means, validate=False)
        self.state = result[0] if return_means else result
        self.n_sweeps += steps
        return result

    def state_dict(self) -> dict:
        """Tensors and counters to save; restore with :meth:`load_state_dict`."""
        return {"state": {name: tensor.clone() for name, tensor in self.state.items()}, "n_sweeps": self.n_sweeps}

    def load_state_dict(self, saved: Mapping) -> None:
        """Restore a state saved by :meth:`state_dict`."""
        state = _check_chain_state(self.schedule, saved["state"])
        self.state = {name: tensor.clone() for name, tensor in state.items()}
        self.n_sweeps = int(saved["n_sweeps"])

    def __repr__(self) -> str:
        return f"PersistentChains(n_chains={self.n_chains}, n_sweeps={self.n_sweeps}, schedule={self.schedule})"


def _check_chain_state(schedule, state: Mapping[str, torch.Tensor]) -> State:
    """Validate a chain state: every layer present, and free layers holding samples, not means."""
    model = schedule.model
    checked = model.check_state(state, required=model.graph.layer_names)
    for name in schedule.free:
        model.graph[name].units.check_support(checked[name], layer=name, allow_means=False)
    return checked
