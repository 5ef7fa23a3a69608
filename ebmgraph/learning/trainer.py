"""Maximum-likelihood training of an energy model with a gradient estimator and torch.optim.SGD."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ebmgraph.learning.algorithms import GradientEstimator
from ebmgraph.learning.monitors import reconstruction_error
from ebmgraph.learning.statistics import log_likelihood_gradient
from ebmgraph.model import EnergyModel, State

__all__ = ["TrainingConfig", "Trainer", "DivergenceError", "iterate_batches"]

logger = logging.getLogger(__name__)


class DivergenceError(FloatingPointError):
    """Training produced a non-finite parameter; the message names the epoch, step and parameter."""


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of stochastic gradient ascent on the log-likelihood.

    The update of every parameter follows Hinton's practical guide,
    ``delta <- momentum * delta + learning_rate * (gradient - weight_decay * W)``,
    with the decay applied to weights only, never to biases. It is carried out by
    ``torch.optim.SGD`` on the negated gradient (identical while the learning rate
    is constant).

    Attributes
    ----------
    epochs : int
    batch_size : int
        Rows per mini-batch. The last batch of an epoch contains the remaining rows.
    learning_rate : float
    momentum : float
    weight_decay : float
        L2 penalty on weights.
    shuffle : bool
        Draw a new order of the rows every epoch (from the trainer's generator).
    learning_rate_schedule : {"constant", "linear"}
        ``"linear"`` lowers the learning rate after every epoch, linearly from
        ``learning_rate`` in the first epoch to ``learning_rate / epochs`` in the
        last. With a changing rate, torch's momentum differs from the guide's rule,
        which scales only the new gradient by the current rate.
    """

    epochs: int = 1
    batch_size: int = 20
    learning_rate: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    shuffle: bool = True
    learning_rate_schedule: str = "constant"

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a positive finite number, got {self.learning_rate!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (self.weight_decay >= 0.0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be a non-negative finite number, got {self.weight_decay!r}")
        if self.learning_rate_schedule not in ("constant", "linear"):
            raise ValueError(f"learning_rate_schedule must be 'constant' or 'linear', got {self.learning_rate_schedule!r}")

    def learning_rate_at(self, epoch: int) -> float:
        """Learning rate of the 0-based ``epoch``."""
        if self.learning_rate_schedule == "constant":
            return self.learning_rate
        return self.learning_rate * (self.epochs - epoch) / self.epochs


def iterate_batches(n_rows: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None, device=None):
    """Yield index tensors of consecutive mini-batches covering every row once; the last may be smaller."""
    order = torch.randperm(n_rows, generator=generator) if shuffle else torch.arange(n_rows)
    order = order.to(device)
    for start in range(0, n_rows, batch_size):
        yield order[start : start + batch_size]


@dataclass
class Trainer:
    """Train ``model`` on data layers with ``estimator`` under ``config``.

    Parameters
    ----------
    model : EnergyModel
    estimator : GradientEstimator
    config : TrainingConfig
    generator : torch.Generator, optional
        Source of the batch order and of every draw of the estimator.
    monitor_rows : int
        Rows of the data (the first ones) on which the reconstruction error is
        measured after each epoch.

    Attributes
    ----------
    optimizer : torch.optim.SGD
        Two parameter groups: weights (with weight decay) and biases (without).
    epoch, step : int
        Completed epochs and updates, for resuming.
    history : list of dict
        One record per epoch with its figures.
    """

    model: EnergyModel
    estimator: GradientEstimator
    config: TrainingConfig = field(default_factory=TrainingConfig)
    generator: torch.Generator | None = None
    monitor_rows: int = 1000
    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.monitor_rows, bool) or not isinstance(self.monitor_rows, int) or self.monitor_rows < 1:
            raise ValueError(f"monitor_rows must be a positive int, got {self.monitor_rows!r}")
        largest = torch.finfo(self.model.dtype).max
        if self.config.learning_rate > largest:
            raise ValueError(
                f"learning_rate={self.config.learning_rate} is larger than the largest {self.model.dtype} "
                f"value ({largest:.4g}); every update would overflow"
            )
        self.optimizer = torch.optim.SGD(
            [
                {"params": list(self.model.weights.values()), "weight_decay": self.config.weight_decay},
                {"params": list(self.model.biases.values()), "weight_decay": 0.0},
            ],
            lr=self.config.learning_rate,
            momentum=self.config.momentum,
        )

    def update(self, batch: State) -> dict[str, torch.Tensor]:
        """One step on one mini-batch; returns the gradient estimate (ascent direction) per parameter."""
        with torch.no_grad():
            data_state, model_state = self.estimator.phases(self.model, batch, self.generator)
            gradient = log_likelihood_gradient(self.model, data_state, model_state)
        self.apply_gradient(gradient)
        return gradient

    def apply_gradient(self, gradient: Mapping[str, torch.Tensor]) -> None:
        """Take one optimizer step along an ascent direction keyed like ``model.named_parameters()``.

        Raises :class:`DivergenceError` if a parameter is non-finite afterwards.
        """
        parameters = dict(self.model.named_parameters())
        for name, parameter in parameters.items():
            parameter.grad = -gradient[name]
        self.optimizer.step()
        self.step += 1
        # NOTE: this check reads a flag back from the device after every update, a synchronisation on a GPU.
        self.check_finite(f"became non-finite at epoch {self.epoch + 1}, step {self.step}")

    def check_finite(self, when: str) -> None:
        """Raise :class:`DivergenceError` naming the first non-finite parameter and index."""
        for name, parameter in self.model.named_parameters():
            bad = ~torch.isfinite(parameter)
            if bool(bad.any()):
                index = tuple(int(i) for i in bad.nonzero()[0])
                raise DivergenceError(
                    f"parameter {name} {when} (first at index {index}) with "
                    f"learning_rate={self.config.learning_rate}; lower the learning rate or add weight decay"
                )

    def fit(
        self,
        data: Mapping[str, torch.Tensor],
        *,
        callback: Callable[["Trainer", dict], None] | None = None,
        progress: bool = False,
    ) -> list[dict]:
        """Train for the configured number of epochs on ``data`` (layer name to ``(n, size)``).

        ``callback(trainer, record)`` runs after each epoch and may add figures to
        ``record``. Returns :attr:`history`.
        """
        layers = self.estimator.data_layers(self.model)
        data = self.model.check_state(data, required=layers)
        data = {name: data[name] for name in layers}
        n_rows = next(iter(data.values())).shape[0]
        if n_rows == 0:
            raise ValueError(f"the training data is empty (0 rows in layers {list(layers)})")
        self.check_finite("is non-finite before training")

        epochs = range(self.epoch, self.config.epochs)
        if progress:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc="epochs", unit="epoch", initial=self.epoch, total=self.config.epochs)
        for _ in epochs:
            record = self._run_epoch(data, n_rows)
            if callback is not None:
                callback(self, record)
            self.history.append(record)
            if progress:
                epochs.set_postfix({k: f"{v:.4g}" for k, v in record.items() if isinstance(v, float)})
            logger.info("epoch %d: %s", self.epoch, ", ".join(f"{k}={v:.6g}" for k, v in record.items() if isinstance(v, float)))
        return self.history

    def _run_epoch(self, data: State, n_rows: int) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate_at(self.epoch)
        batches = iterate_batches(
            n_rows, self.config.batch_size, shuffle=self.config.shuffle, generator=self.generator, device=self.model.device
        )
        for index in batches:
            batch = {name: tensor[index] for name, tensor in data.items()}
            self.update(batch)
        self.epoch += 1
        monitor = {name: tensor[: self.monitor_rows] for name, tensor in data.items()}
        error = reconstruction_error(self.model, monitor, clamped=list(data))
        return {"epoch": self.epoch, "step": self.step, "reconstruction_error": error}

    def state_dict(self) -> dict:
        """Optimizer, estimator and counters, for resuming with :meth:`load_state_dict`."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "estimator": self.estimator.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": list(self.history),
            "generator": None if self.generator is None else self.generator.get_state(),
        }

    def load_state_dict(self, saved: Mapping) -> None:
        """Restore a state from :meth:`state_dict`; the model must have the same parameter shapes."""
        missing = [key for key in ("optimizer", "estimator", "epoch", "step", "history") if key not in saved]
        if missing:
            raise ValueError(f"trainer state is missing {missing}; pass the output of Trainer.state_dict()")
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        for index, entry in saved["optimizer"].get("state", {}).items():
            buffer = entry.get("momentum_buffer")
            if buffer is not None and (index >= len(parameters) or buffer.shape != parameters[index].shape):
                raise ValueError(
                    f"trainer state does not fit this model: optimizer buffer {index} has shape {tuple(buffer.shape)}, "
                    f"the parameter has {tuple(parameters[index].shape) if index < len(parameters) else 'no counterpart'}"
                )
        self.optimizer.load_state_dict(saved["optimizer"])
        self.estimator.load_state_dict(saved["estimator"])
        self.epoch = int(saved["epoch"])
        self.step = int(saved["step"])
        self.history = list(saved["history"])
        if saved.get("generator") is not None:
            if self.generator is None:
                raise ValueError("the saved trainer state has a generator state; pass a torch.Generator to the Trainer")
            self.generator.set_state(saved["generator"])
