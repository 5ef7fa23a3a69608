"""Shared types of the benchmark: sizes, the run context, and a measured call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Sizes", "FULL", "TINY", "Context", "Runner", "Unavailable", "INIT_STD"]

INIT_STD = 0.05
"""Standard deviation of the random weights; the cost does not depend on it."""


class Unavailable(Exception):
    """Raised when a variant cannot run here (a library is missing, or the mode skips it); the message gives the reason."""


@dataclass(frozen=True)
class Sizes:
    """Layer sizes, batch sizes and call lengths of the tasks."""

    rbm: tuple[int, int] = (784, 500)
    dbm: tuple[int, int, int] = (784, 500, 500)
    drm: tuple[int, int, int, int] = (784, 400, 400, 10)
    chains: int = 1000
    mean_field_batches: tuple[int, int] = (20, 1000)
    train_batches: tuple[int, int] = (20, 100)
    rbm_train_batch: int = 20
    sweeps_per_call: int = 10
    mean_field_steps: int = 10
    train_rows: int = 2000


FULL = Sizes()
TINY = Sizes(
    rbm=(20, 12),
    dbm=(20, 12, 12),
    drm=(20, 8, 8, 3),
    chains=16,
    mean_field_batches=(4, 16),
    train_batches=(4, 8),
    rbm_train_batch=4,
    sweeps_per_call=2,
    mean_field_steps=3,
    train_rows=32,
)


@dataclass(frozen=True)
class Context:
    """Settings every variant factory reads: device, dtype, sizes and mode."""

    device: torch.device
    dtype: torch.dtype
    sizes: Sizes
    quick: bool = False
    seed: int = 0
    capture: bool = False

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh generator on the device, seeded with ``seed + offset``."""
        return torch.Generator(self.device).manual_seed(self.seed + offset)

    def binary(self, rows: int, columns: int, *, offset: int = 1) -> torch.Tensor:
        """Random {0, 1} data of shape ``(rows, columns)``, on the device, in the dtype."""
        probs = torch.full((rows, columns), 0.3, dtype=self.dtype)
        return torch.bernoulli(probs, generator=torch.Generator().manual_seed(self.seed + offset)).to(self.device)

    def one_hot(self, rows: int, classes: int, *, offset: int = 2) -> torch.Tensor:
        """Random one-hot label rows of shape ``(rows, classes)``."""
        labels = torch.randint(classes, (rows,), generator=torch.Generator().manual_seed(self.seed + offset))
        return torch.nn.functional.one_hot(labels, classes).to(dtype=self.dtype, device=self.device)

    def model_options(self) -> dict:
        return {
            "init_std": INIT_STD,
            "generator": torch.Generator().manual_seed(self.seed),
            "dtype": self.dtype,
            "device": self.device,
        }


@dataclass
class Runner:
    """A timed call and how much work it does.

    Attributes
    ----------
    call : callable
        One measured call; its result is ignored.
    units_per_call : float
        Sweeps, iterations or examples that one call completes.
    max_rounds : int, optional
        Cap on the rounds this variant takes part in (for slow libraries).
    device : str, optional
        Where the variant runs when that differs from the benchmark's device.
    """

    call: Callable[[], object]
    units_per_call: float
    max_rounds: int | None = None
    device: str | None = None


