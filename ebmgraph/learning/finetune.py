"""Fine-tuning: unroll a trained model into a feed-forward network and train it by back-propagation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ebmgraph import distributed as data_parallel
from ebmgraph.learning.trainer import DivergenceError, iterate_batches
from ebmgraph.model import EnergyModel

__all__ = ["FeedForward", "unroll", "finetune", "classification_error"]

logger = logging.getLogger(__name__)


class FeedForward(nn.Module):
    """A sigmoid network ``x -> h1 -> ... -> output`` whose last layer returns logits.

    Parameters
    ----------
    sizes : sequence of int
        Widths from the input to the output, e.g. ``(784, 400, 400, 10)``.
    generator : torch.Generator, optional
        Source of the initial weights: uniform in ``[-1/sqrt(n_in), 1/sqrt(n_in)]``
        (the range of ``torch.nn.Linear``'s default), biases zero.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"a feed-forward network needs at least an input and an output size, got {sizes}")
        self.layers = nn.ModuleList(nn.Linear(a, b, dtype=dtype, device=device) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():
            for layer in self.layers:
                bound = layer.in_features**-0.5
                uniform = torch.rand(layer.weight.shape, generator=generator, dtype=dtype, device=None if generator is None else generator.device)
                layer.weight.copy_((2 * uniform - 1) * bound)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, output size)`` for inputs ``(batch, input size)``."""
        for layer in self.layers[:-1]:
            x = torch.sigmoid(layer(x))
        return self.layers[-1](x)


def unroll(
    model: EnergyModel, path: Sequence[str], *, output_size: int | None = None, generator: torch.Generator | None = None
) -> FeedForward:
    """Build a :class:`FeedForward` network along ``path`` with the model's weights and biases.

    Layer ``path[k+1]`` computes ``sigmoid(b + h_k W)`` from ``path[k]`` alone (the
    top-down input a layer gets in the energy model is dropped, as in DBN
    fine-tuning). With ``output_size`` a new, randomly initialised output layer
    is added after the last layer of ``path`` (for models without a label layer).
    """
    path = list(path)
    if len(path) < 2 and output_size is None:
        raise ValueError(f"path must name at least two layers, got {path}")
    if output_size is not None and (isinstance(output_size, bool) or not isinstance(output_size, int) or output_size < 1):
        raise ValueError(f"output_size must be a positive int or None, got {output_size!r}")
    for a, b in zip(path[:-1], path[1:]):
        model.weight(a, b)
    sizes = [model.graph[name].size for name in path] + ([output_size] if output_size else [])
    network = FeedForward(sizes, generator=generator, dtype=model.dtype, device=model.device)
    with torch.no_grad():
        for layer, (a, b) in zip(network.layers, zip(path[:-1], path[1:])):
            layer.weight.copy_(model.weight(a, b).T)
            layer.bias.copy_(model.biases[b])
    return network


def classification_error(
    network: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1000, distributed: bool | None = None
) -> float:
    """Fraction of rows whose argmax output differs from ``labels`` (int64, shape ``(n,)``).

    In data-parallel use (``distributed``, see :func:`ebmgraph.distributed.resolve`)
    each rank classifies its share of the rows and the counts are all-reduced, so
    every rank of the process group must call this.
    """
    if x.shape[0] == 0:
        raise ValueError("cannot measure a classification error on empty data")

    def count_wrong(start: int, stop: int) -> int:
        predicted = network(x[start:stop]).argmax(dim=1)
        return int((predicted != labels[start:stop]).sum())

    with torch.no_grad():
        wrong = data_parallel.sharded_sum(count_wrong, x.shape[0], chunk_size=batch_size, device=x.device, distributed=distributed)
    return wrong / x.shape[0]


def finetune(
    network: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 10,
    batch_size: int = 20,
    learning_rate: float = 0.1,
    momentum: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callable[[int, dict], None] | None = None,
    distributed: bool | None = None,
) -> list[dict]:
    """Train ``network`` with cross-entropy and SGD; return one record per epoch.

    ``labels`` are class indices, int64 of shape ``(n,)``. ``callback(epoch, record)``
    runs after each epoch and may add figures to the record.

    With ``distributed`` (see :func:`ebmgraph.distributed.resolve`, by default
    whenever a process group is initialised) training is data-parallel as in
    :class:`~ebmgraph.learning.trainer.Trainer`. Rank 0's parameters are first
    copied to every rank. Each mini-batch then contains ``batch_size * world_size``
    rows in the order that rank 0 draws from ``generator``, and each rank
    back-propagates ``batch_size`` of them. One all-reduce per update averages
    the gradients and the loss, each rank weighted by its rows.
    """
    _check_finetune_arguments(network, x, labels, epochs, batch_size, learning_rate)
    optimizer = torch.optim.SGD(network.parameters(), lr=learning_rate, momentum=momentum)
    world = data_parallel.get_world_size() if data_parallel.resolve(distributed) else 1
    if world > 1:
        data_parallel.broadcast_parameters(network)
    history = []
    for epoch in range(1, epochs + 1):
        total = 0.0
        if world == 1:
            batches = iterate_batches(x.shape[0], batch_size, shuffle=True, generator=generator, device=x.device)
        else:
            batches = data_parallel.sharded_batches(x.shape[0], batch_size, shuffle=True, generator=generator, device=x.device)
        for index in batches:
            total += _backpropagation_step(network, optimizer, x[index], labels[index], world)
        record = {"epoch": epoch, "loss": total / x.shape[0]}
        for name, parameter in network.named_parameters():
            if not bool(torch.isfinite(parameter).all()):
                raise DivergenceError(
                    f"fine-tuning parameter {name} became non-finite in epoch {epoch} with learning_rate={learning_rate}; "
                    "lower the learning rate"
                )
        if callback is not None:
            callback(epoch, record)
        logger.info("fine-tuning epoch %d: loss %.5f", epoch, record["loss"])
        history.append(record)
    return history


def _backpropagation_step(network: nn.Module, optimizer, x: torch.Tensor, labels: torch.Tensor, world: int) -> float:
    """Take one SGD step on a mini-batch and return its cross-entropy summed over rows.

    With ``world > 1``, ``x`` and ``labels`` are this rank's shard (possibly empty),
    and the gradient and the returned sum cover the shards of every rank.
    """
    optimizer.zero_grad()
    rows = x.shape[0]
    if world == 1:
        loss = nn.functional.cross_entropy(network(x), labels)
        loss.backward()
        optimizer.step()
        return loss.item() * rows

    parameters = dict(network.named_parameters())
    # "grad." keeps the gradients' keys apart from "loss" whatever the parameters are called.
    local = {f"grad.{name}": torch.zeros_like(parameter) for name, parameter in parameters.items()}
    first = next(iter(local.values()))
    local["loss"] = torch.zeros((), dtype=first.dtype, device=first.device)
    if rows:
        loss = nn.functional.cross_entropy(network(x), labels)
        loss.backward()
        local.update({f"grad.{name}": p.grad for name, p in parameters.items() if p.grad is not None})
        local["loss"] = loss.detach()
    mean, total_rows = data_parallel.average_over_ranks(local, rows)
    for name, parameter in parameters.items():
        parameter.grad = mean[f"grad.{name}"]
    optimizer.step()
    return float(mean["loss"] * total_rows)


def _check_finetune_arguments(network, x, labels, epochs, batch_size, learning_rate) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a tensor of shape (n, n_inputs), got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] == 0:
        raise ValueError("the fine-tuning data is empty")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (x.shape[0],):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        dtype = labels.dtype if isinstance(labels, torch.Tensor) else None
        raise ValueError(f"labels must be int64 class indices of shape ({x.shape[0]},), got {shape} of dtype {dtype}")
    n_outputs = network.layers[-1].out_features if isinstance(network, FeedForward) else None
    if n_outputs is not None and (int(labels.min()) < 0 or int(labels.max()) >= n_outputs):
        raise ValueError(f"labels must lie in [0, {n_outputs - 1}], got values from {int(labels.min())} to {int(labels.max())}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < float("inf")):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
