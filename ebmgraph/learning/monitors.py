"""Cheap figures to watch during training."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from ebmgraph.model import EnergyModel
from ebmgraph.units import Bernoulli, Spin

__all__ = ["pseudo_log_likelihood", "reconstruction_error"]


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


@torch.no_grad()
def pseudo_log_likelihood(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor],
    *,
    generator: torch.Generator,
    layers: Iterable[str] | None = None,
) -> float:
    r"""Estimate the pseudo-log-likelihood of binary data layers, averaged over rows.

    The pseudo-log-likelihood of a row is ``sum_i log p(v_i | v_-i)`` over the ``D``
    binary units of ``layers``. Each row flips one unit ``i`` drawn uniformly
    and contributes ``D log sigmoid(F(v with i flipped) - F(v))``, an unbiased
    estimate of its pseudo-log-likelihood. Its noise shrinks with the number of rows.

    Parameters
    ----------
    model : EnergyModel
    data : dict of str to Tensor, each ``(batch, size)``
        Samples of the observed layers. Every other layer is summed out, so those
        layers must be pairwise non-adjacent (an RBM, or several visible layers
        around one hidden layer). Observed layers outside ``layers`` are held fixed.
    generator : torch.Generator
        Source of the choice of flipped units.
    layers : iterable of str, optional
        Bernoulli or spin layers of ``data`` to score; by default all of them.

    Returns
    -------
    float
        Nats per row.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError("data must be a non-empty mapping from layer name to tensor")
    data = model.check_state(data, allow_means=False)
    unobserved = [name for name in model.graph.layer_names if name not in data]
    for i, a in enumerate(unobserved):
        for b in unobserved[i + 1 :]:
            if model.graph.nx.has_edge(a, b):
                raise ValueError(
                    f"pseudo_log_likelihood needs the free energy of the data in closed form, but the "
                    f"unobserved layers {a!r} and {b!r} are joined by an edge; use reconstruction_error instead"
                )
    scored = _binary_layers(model, data, layers)

    free_energy = model.free_energy(data)
    sizes = [model.graph[name].size for name in scored]
    batch = free_energy.shape[0]
    chosen = torch.randint(sum(sizes), (batch,), generator=generator, device=model.device)
    one_hot = torch.nn.functional.one_hot(chosen, sum(sizes)).to(model.dtype)
    flipped = dict(data)
    for name, mask in zip(scored, one_hot.split(sizes, dim=1)):
        values = data[name]
        opposite = -values if isinstance(model.graph[name].units, Spin) else 1 - values
        flipped[name] = torch.lerp(values, opposite, mask)
    log_conditional = torch.nn.functional.logsigmoid(model.free_energy(flipped) - free_energy)
    return (sum(sizes) * log_conditional).mean().item()


def _binary_layers(model: EnergyModel, data: Mapping[str, torch.Tensor], layers) -> tuple[str, ...]:
    binary = tuple(name for name in data if isinstance(model.graph[name].units, (Bernoulli, Spin)))
    if layers is None:
        if not binary:
            raise ValueError(f"pseudo_log_likelihood needs a bernoulli or spin layer in data, got layers {list(data)}")
        return binary
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if not names:
        raise ValueError("layers is empty; name at least one bernoulli or spin layer of data")
    for name in names:
        if name not in data:
            raise ValueError(f"layers names {name!r}, which data lacks; data has {list(data)}")
        if name not in binary:
            raise ValueError(f"layer {name!r} has {model.graph[name].units.name} units; only bernoulli and spin layers can be scored")
    return names
