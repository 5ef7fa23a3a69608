"""Data-parallel training over a torch.distributed process group.

Every process (rank) has a full copy of the model. Each mini-batch of the
single-process run is split across the ranks. Every rank computes the gradient
of its shard, and one all-reduce per update averages the shards' gradients,
weighted by their rows. With ``world`` ranks and a per-rank mini-batch of ``B``
rows, an update therefore follows the gradient of a mini-batch of ``world * B``
rows, as one process with ``batch_size = world * B`` would.

The process group comes from ``torch.distributed`` (NCCL between GPUs, Gloo
between CPUs) and is usually set up from ``torchrun``'s environment by
:func:`init_from_environment`.
Without an initialised group every function here acts as a single process of
rank 0 in a group of one.

The functions that communicate (:func:`average_over_ranks`, :func:`broadcast_parameters`,
:func:`shared_order`, :func:`sharded_batches` and :func:`sharded_sum`) are
collectives, so every rank of the group must call them in the same order.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

__all__ = [
    "TORCHRUN_VARIABLES",
    "average_over_ranks",
    "broadcast_parameters",
    "get_rank",
    "get_world_size",
    "init_from_environment",
    "is_initialized",
    "is_main_process",
    "rank_generator",
    "resolve",
    "shard",
    "shard_rows",
    "sharded_batches",
    "sharded_sum",
    "shared_order",
    "shutdown",
]

logger = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""Environment variables that torchrun sets for every worker and :func:`init_from_environment` reads."""

_joined_from_environment = False


def is_initialized() -> bool:
    """Return whether this torch build has torch.distributed and a default process group is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_rank() -> int:
    """Rank of this process in the default process group; 0 without a group."""
    return torch.distributed.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of ranks in the default process group; 1 without a group."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """Return whether this process is rank 0, the one that writes checkpoints, metrics and progress output."""
    return get_rank() == 0


def resolve(setting: bool | None) -> bool:
    """Decide whether to train data-parallel from a ``distributed`` setting.

    ``None`` means "when a process group is initialised". ``True`` requires one,
    and ``False`` keeps each rank independent even when a group exists.
    """
    if setting is not None and not isinstance(setting, bool):
        raise TypeError(f"distributed must be True, False or None, got {setting!r}")
    if setting is None:
        return is_initialized()
    if setting and not is_initialized():
        raise ValueError(
            "distributed=True but no torch.distributed process group is initialised; launch with torchrun and call "
            "ebmgraph.distributed.init_from_environment() (or torch.distributed.init_process_group) first"
        )
    return setting


def _check_rank(rank: int, world: int) -> None:
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be a positive int, got {world!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise ValueError(f"rank must be an int in [0, {world}), got {rank!r}")


def shard(index: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Return rank ``rank``'s contiguous share of the rows ``index`` of one global mini-batch.

    The shards of ranks ``0 .. world - 1``, concatenated in rank order, are
    ``index`` again. Their sizes differ by at most one, and the larger ones come
    first, so a ragged last mini-batch can leave the last ranks an empty shard.

    Parameters
    ----------
    index : Tensor, shape ``(n,)``
        Row indices of the global mini-batch.
    rank : int
        In ``[0, world)``.
    world : int
        Number of ranks, at least 1.

    Returns
    -------
    Tensor, shape ``(n // world + (rank < n % world),)``
    """
    _check_rank(rank, world)
    if index.dim() != 1:
        raise ValueError(f"index must be a 1-D tensor of row indices, got shape {tuple(index.shape)}")
    return torch.tensor_split(index, world)[rank]


def shard_rows(n_rows: int, rank: int | None = None, world: int | None = None) -> slice:
    """Return the rows ``start:stop`` of ``n_rows`` that rank ``rank`` evaluates, split as :func:`shard` splits.

    ``rank`` and ``world`` default to this process's rank and group size.
    """
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world is None else world
    _check_rank(rank, world)
    # The first n_rows % world ranks take one row more, as torch.tensor_split does.
    size, larger = divmod(n_rows, world)
    start = rank * size + min(rank, larger)
    return slice(start, start + size + (rank < larger))


def shared_order(
    n_rows: int, *, shuffle: bool, generator: torch.Generator | None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Return one order of the rows for every rank: rank 0 draws it, the others receive it.

    Rank 0 draws exactly as :func:`ebmgraph.learning.trainer.iterate_batches` does
    (``torch.randperm(n_rows, generator=generator)``, then moved to ``device``), so
    rank 0's generator advances as in a single-process run. Collective when
    ``shuffle`` is true and a group of more than one rank is initialised.

    Returns
    -------
    Tensor, int64 of shape ``(n_rows,)`` on ``device``
    """
    if not shuffle:
        return torch.arange(n_rows, device=device)
    if get_world_size() == 1:
        return torch.randperm(n_rows, generator=generator, device=generator.device).to(device)
    if is_main_process():
        order = torch.randperm(n_rows, generator=generator, device=generator.device).to(device)
    else:
        order = torch.empty(n_rows, dtype=torch.int64, device=device)
    torch.distributed.broadcast(order, src=0)
    return order


def sharded_batches(
    n_rows: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> Iterator[torch.Tensor]:
    """Yield this rank's shard of every global mini-batch of one epoch.

    A global mini-batch contains ``batch_size * world`` consecutive rows of
    :func:`shared_order` (the last one may contain fewer). Every rank yields the same
    number of shards, some possibly empty, so every rank takes part in every update.
    """
    rank, world = get_rank(), get_world_size()
    order = shared_order(n_rows, shuffle=shuffle, generator=generator, device=device)
    global_size = batch_size * world
    for start in range(0, n_rows, global_size):
        yield shard(order[start : start + global_size], rank, world)


def average_over_ranks(tensors: Mapping[str, torch.Tensor], weight: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Return the ``weight``-weighted mean over ranks of every tensor, with one all-reduce.

    Each rank passes its tensors (for example the gradient of its shard) and their
    weight (the shard's rows). The result is ``sum_r weight_r * tensors_r / sum_r weight_r``
    on every rank, so the mean gradients of shards of different sizes combine into
    the mean gradient of the whole mini-batch. A rank with ``weight == 0`` adds
    nothing and its tensors are never read, so they may be NaN. When every weight is
    0 the result is zero. The tensors are flattened into one buffer, so an update
    costs one collective, not one per tensor.

    Parameters
    ----------
    tensors : dict of str to Tensor
        The same names, shapes, dtype and device on every rank, in any order.
    weight : int or float
        Non-negative.

    Returns
    -------
    (dict of str to Tensor, Tensor)
        The means, shaped like ``tensors``, and the total weight (a 0-d tensor).
    """
    if not tensors:
        raise ValueError("tensors is empty; pass at least one tensor to average")
    if not weight >= 0:
        raise ValueError(f"weight must be a non-negative number, got {weight!r}")
    # Every rank flattens in sorted name order, whatever order its dict was built in.
    names = sorted(tensors)
    values = [tensors[name] for name in names]
    first = values[0]
    for name, tensor in tensors.items():
        if tensor.dtype != first.dtype or tensor.device != first.device:
            raise ValueError(
                f"tensor {name!r} has dtype {tensor.dtype} on {tensor.device}, but the first has {first.dtype} "
                f"on {first.device}; average tensors of one dtype and device together"
            )
    numel = [tensor.numel() for tensor in values]
    if weight > 0:
        one = torch.ones(1, dtype=first.dtype, device=first.device)
        flat = torch.cat([tensor.reshape(-1) for tensor in values] + [one]) * weight
    else:
        flat = torch.zeros(sum(numel) + 1, dtype=first.dtype, device=first.device)
    if get_world_size() > 1:
        torch.distributed.all_reduce(flat)
    total = flat[-1]
    mean = flat[:-1] / torch.where(total > 0, total, torch.ones_like(total))
    pieces = torch.split(mean, numel)
    means = {name: piece.reshape(tensors[name].shape) for name, piece in zip(names, pieces)}
    return {name: means[name] for name in tensors}, total


def broadcast_parameters(module: nn.Module) -> None:
    """Copy rank 0's parameters into every rank's ``module`` in place, with one broadcast.

    Every rank must pass a module with the same parameter names, shapes, dtype and device.
    """
    if get_world_size() == 1:
        return
    parameters = list(module.parameters())
    if not parameters:
        return
    with torch.no_grad():
        flat = torch.cat([parameter.detach().reshape(-1) for parameter in parameters])
        torch.distributed.broadcast(flat, src=0)
        for parameter, piece in zip(parameters, torch.split(flat, [p.numel() for p in parameters])):
            parameter.copy_(piece.reshape(parameter.shape))


def rank_generator(generator: torch.Generator, rank: int | None = None) -> torch.Generator:
    """Return the generator of this rank's own random draws (its Gibbs chains and samples).

    Rank 0 uses ``generator`` itself, so it draws as a single-process run would.
    Every other rank gets a new generator on ``generator``'s device, seeded with
    one 62-bit draw from ``generator`` plus the rank. When every rank's
    ``generator`` starts from the same seed, as with the ``ebmgraph`` command,
    the ranks draw different numbers and a rerun draws the same ones.
    """
    rank = get_rank() if rank is None else rank
    if rank == 0:
        return generator
    base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=generator.device).manual_seed(base + rank)


def sharded_sum(
    measure: Callable[[int, int], float],
    n_rows: int,
    *,
    chunk_size: int,
    device: torch.device | str | None = None,
    distributed: bool | None = None,
) -> float:
    """Sum ``measure(start, stop)`` over chunks of the rows, each rank taking its share of them.

    The rows ``0 .. n_rows - 1`` are split across ranks as :func:`shard_rows`
    splits them, each rank walks its share in chunks of at most ``chunk_size``
    rows, and the per-rank sums are added with one all-reduce. Without
    data-parallelism (see :func:`resolve` for ``distributed``) one process walks
    all rows. Use it for counts and sums, such as misclassified rows.
    """
    active = resolve(distributed) and get_world_size() > 1
    rows = shard_rows(n_rows) if active else slice(0, n_rows)
    total = 0.0
    for start in range(rows.start, rows.stop, chunk_size):
        total += measure(start, min(start + chunk_size, rows.stop))
    if not active:
        return total
    reduced = torch.tensor([total], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(reduced)
    return float(reduced[0])


def init_from_environment(device: torch.device | str = "cpu", *, timeout: datetime.timedelta | None = None) -> torch.device:
    """Join the process group described by torchrun's environment and return this rank's device.

    torchrun sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
    (and ``LOCAL_RANK``) for every worker. When none of the four is set, nothing
    happens and ``device`` is returned, so a plain ``python -m ebmgraph`` run is
    unaffected. Otherwise the default process group is initialised with the NCCL
    backend for a CUDA ``device`` and Gloo for any other. A CUDA device given
    without an index becomes ``cuda:LOCAL_RANK``, one GPU per worker of a node, and
    is made the current CUDA device. An already initialised group is kept.

    Parameters
    ----------
    device : torch.device or str
    timeout : datetime.timedelta, optional
        How long collectives wait for the other ranks (torch's default when omitted).

    Returns
    -------
    torch.device
    """
    global _joined_from_environment
    device = torch.device(device)
    present = [name for name in TORCHRUN_VARIABLES if os.environ.get(name)]
    if not present:
        return device
    missing = [name for name in TORCHRUN_VARIABLES if name not in present]
    if missing:
        raise ValueError(
            f"the environment sets {present} but not {missing}; launch with torchrun, or set all of {list(TORCHRUN_VARIABLES)}"
        )
    if not torch.distributed.is_available():
        raise RuntimeError("torchrun's environment variables are set, but this torch build has no torch.distributed")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if is_initialized():
        return device

    backend = "nccl" if device.type == "cuda" else "gloo"
    options = {} if timeout is None else {"timeout": timeout}
    torch.distributed.init_process_group(backend=backend, **options)
    _joined_from_environment = True
    logger.info("joined the process group as rank %d of %d (backend %s, device %s)", get_rank(), get_world_size(), backend, device)
    return device


def shutdown(*, wait_for_ranks: bool = False) -> None:
    """Destroy the process group if :func:`init_from_environment` initialised it; otherwise do nothing.

    Parameters
    ----------
    wait_for_ranks : bool
        Wait at a barrier until every rank reaches its own shutdown first, so
        that no rank closes its connections while another still uses them. Pass
        it only where every rank gets here (after a successful run), because a
        rank that failed earlier never arrives and the others would wait for the
        group's timeout.
    """
    global _joined_from_environment
    if _joined_from_environment and is_initialized():
        if wait_for_ranks:
            # NOTE: a rank aborted at exit ("terminate called without an active exception") three
            # times in this project's test runs, each on a machine loaded by other jobs. It did not
            # recur in 15 loaded runs, so this barrier is a suspected remedy, not a confirmed one.
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    _joined_from_environment = False
