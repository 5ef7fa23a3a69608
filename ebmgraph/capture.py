"""CUDA-graph replay of schedule calls, for small batches where kernel launches dominate.

With ``capture=True`` :meth:`Schedule.gibbs <ebmgraph.schedule.Schedule.gibbs>`
and :meth:`Schedule.mean_field <ebmgraph.schedule.Schedule.mean_field>` record
the whole call, every sweep included, as one CUDA graph. They do so the first
time they see a combination of input shapes and options, and replay the graph
afterwards: one launch in place of three or four kernels per layer and sweep.
Before each replay the inputs are copied into the graph's static input tensors.
After it the outputs are cloned, so that a result stays valid after the next
call.

The graph reads the parameters where they live, so in-place training updates
(``torch.optim``) are seen by later replays. Random draws come from the generator
given at capture, registered with the graph through torch's graph-safe RNG state,
so every replay draws new numbers and advances it. Capture itself runs the call
three times first (warm-up on a side stream), which advances the generator too.

NOTE: written against the CUDA-graph API of torch 2.x but not yet run on a GPU.
The tests marked ``cuda`` exercise it where a device exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ebmgraph.model import State

__all__ = ["CapturedCall", "check_capturable", "captured_key"]

WARMUP_CALLS = 3
"""Eager runs on a side stream before capture, as CUDA-graph capture requires."""


def check_capturable(schedule, state: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless the model and ``state`` live on a CUDA device."""
    device = schedule.model.device
    if device.type != "cuda":
        raise ValueError(
            f"capture=True records a CUDA graph and needs a model on a CUDA device; this model is on {device}. "
            "Call without capture on the CPU."
        )
    for name, tensor in state.items():
        if tensor.device != device:
            raise ValueError(f"capture=True: layer {name!r} is on {tensor.device}, the model on {device}")


class CapturedCall:
    """One schedule call recorded as a CUDA graph for fixed input shapes and options.

    Parameters
    ----------
    run : callable
        Runs the call on a state dict (which it may modify) and returns a state or
        a ``(state, means)`` pair, without reading values back to the host.
    state : dict of str to Tensor
        Example inputs; their shapes and dtypes are fixed for the graph's life.
    generator : torch.Generator, optional
        The CUDA generator ``run`` draws from, or None for the device's default.
    """

    def __init__(self, run: Callable[[State], object], state: State, generator: torch.Generator | None):
        self.inputs = {name: tensor.clone() for name, tensor in state.items()}
        # Held so that the generator, whose id is part of the cache key, outlives this graph.
        self.generator = generator
        self.graph = torch.cuda.CUDAGraph()
        if generator is not None:
            register = getattr(self.graph, "register_generator_state", None)
            if register is None:
                raise ValueError(
                    f"torch {torch.__version__} cannot register a user generator with a CUDA graph; "
                    "pass generator=None (the device's default generator) with capture=True"
                )
            register(generator)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                run(dict(self.inputs))
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.outputs = run(dict(self.inputs))

    def __call__(self, state: Mapping[str, torch.Tensor]):
        """Copy ``state`` into the graph's inputs, replay, and return clones of the outputs."""
        for name, tensor in state.items():
            self.inputs[name].copy_(tensor)
        self.graph.replay()
        if isinstance(self.outputs, tuple):
            return tuple(_clone(part) for part in self.outputs)
        return _clone(self.outputs)


def _clone(state: State) -> State:
    return {name: tensor.clone() for name, tensor in state.items()}


def captured_key(kind: str, state: Mapping[str, torch.Tensor], generator, **options) -> tuple:
    """Cache key of a captured call: its kind, input layout, options and generator object."""
    layout = tuple(sorted((name, tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()))
    return (kind, layout, id(generator), tuple(sorted(options.items())))
