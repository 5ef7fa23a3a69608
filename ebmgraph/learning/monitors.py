"""Cheap figures to watch during training."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from ebmgraph.model import EnergyModel

__all__ = ["reconstruction_error"]


@torch.no_grad()
def reconstruction_error(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor],
    *,
    clamped: Iterable[str] | None = None,
    steps: int = 10,
) -> float:
    """Measure the mean squared difference between data and its mean-field reconstruction.

    The data layers are clamped and the hidden layers set to their (mean-field)
    conditional means. Each data layer is then replaced by its conditional mean
    given those. The error is summed over units and averaged over rows and layers.
    """
    layers = tuple(clamped) if clamped is not None else model.graph.visible
    schedule = model.schedule(layers)
    sweeps = 1 if len(schedule.blocks) == 1 else steps
    means = schedule.mean_field({name: data[name] for name in layers}, sweeps)
    total = 0.0
    for name in layers:
        reconstruction = model.graph[name].units.mean(model.input(name, means))
        total += ((reconstruction - means[name]) ** 2).sum(dim=1).mean().item()
    return total / len(layers)
