"""Maximum-likelihood training of an energy model with a gradient estimator and torch.optim.SGD."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field

import torch

from ebmgraph import distributed as data_parallel
from ebmgraph.learning.algorithms import GradientEstimator
from ebmgraph.learning.monitors import reconstruction_error
from ebmgraph.learning.resume import EpochCheckpoint
from ebmgraph.learning.statistics import ascend_log_likelihood_, log_likelihood_gradient
from ebmgraph.model import EnergyModel, State

__all__ = ["TrainingConfig", "Trainer", "DivergenceError", "iterate_batches"]

logger = logging.getLogger(__name__)


class DivergenceError(FloatingPointError):
    """Training produced a non-finite or exploding parameter; the message names the epoch, step and parameter."""


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
    max_abs_parameter : float
        Largest magnitude a weight or bias may reach before training stops with
        :class:`DivergenceError` (``math.inf`` turns the check off). A logistic
        unit is saturated in float32 once its input exceeds about 17, so a
        parameter of 1e4 on data in [0, 1] means the run has diverged; raise it
        for unscaled real-valued data.
    """

    epochs: int = 1
    batch_size: int = 20
    learning_rate: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    shuffle: bool = True
    learning_rate_schedule: str = "constant"
    max_abs_parameter: float = 1e4

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("learning_rate", "momentum", "weight_decay", "max_abs_parameter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if not (self.max_abs_parameter > 0):
            raise ValueError(f"max_abs_parameter must be a positive number or math.inf, got {self.max_abs_parameter!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
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


def iterate_batches(
    n_rows: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None, device: torch.device | str | None = None
) -> Iterator[torch.Tensor]:
    """Yield index tensors of consecutive mini-batches covering every row once; the last may be smaller."""
    if shuffle:
        # The permutation is drawn on the generator's device, so a CUDA generator serves here as well as in sampling.
        where = None if generator is None else generator.device
        order = torch.randperm(n_rows, generator=generator, device=where)
    else:
        order = torch.arange(n_rows)
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
    distributed : bool, optional
        Train data-parallel over the default torch.distributed process group of
        ``world_size`` ranks. ``None`` (the default) does so whenever a group is
        initialised, ``True`` requires one and ``False`` trains this process alone.
        Each mini-batch then contains ``config.batch_size * world_size`` rows, of
        which every rank reads ``config.batch_size``. Each rank computes the
        gradient of its rows with its own estimator, and one all-reduce per update
        averages the gradients. Persistent chains stay per rank, so ``n_chains``
        counts the chains of one rank. Rank 0 draws the batch order and its own
        samples from ``generator``. Every other rank draws its samples from
        :func:`ebmgraph.distributed.rank_generator`, so ``generator`` is required.

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
    distributed: bool | None = None
    _rank_generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self._check_arguments()
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
        # Parameter names of each optimizer group, in the group's order, for the plain step.
        self._group_names = [[f"weights.{key}" for key in self.model.weights], [f"biases.{key}" for key in self.model.biases]]

    def _check_arguments(self) -> None:
        if not isinstance(self.model, EnergyModel):
            raise TypeError(f"model must be an EnergyModel, got {type(self.model).__name__}")
        if not isinstance(self.estimator, GradientEstimator):
            raise TypeError(f"estimator must be a GradientEstimator such as CD(1), got {type(self.estimator).__name__}")
        if not isinstance(self.config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(self.config).__name__}")
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(self.generator).__name__}")

    @property
    def world_size(self) -> int:
        """Number of ranks that share every update: the process group's size in data-parallel training, else 1."""
        return data_parallel.get_world_size() if data_parallel.resolve(self.distributed) else 1

    def update(self, batch: State) -> dict[str, torch.Tensor]:
        """One step on one mini-batch; returns the gradient estimate (ascent direction) per parameter.

        In data-parallel training (:attr:`world_size` above 1) ``batch`` is this
        rank's shard, which may be empty, and every rank must call this once per
        update. The shards' gradients are averaged over the ranks, each weighted
        by its rows, so every rank returns and applies the gradient of the whole
        mini-batch.

        The batch's values are not checked, because :meth:`fit` checks its data
        once before the first step. Check a batch of your own with
        ``model.check_state(batch)``.
        """
        _check_mapping(batch)
        if self.world_size == 1:
            gradient = self._batch_gradient(batch, self.generator)
        else:
            gradient = self._all_reduced_gradient(batch)
        self.apply_gradient(gradient)
        return gradient

    def fit_batch(self, batch: State) -> None:
        """Take one step on one mini-batch as :meth:`fit` does, without returning the gradient.

        Equal to :meth:`update` up to rounding. Without momentum or weight decay,
        in single-process training, it adds the step to the parameters without
        forming the gradient (:func:`~ebmgraph.learning.statistics.ascend_log_likelihood_`),
        which saves a weight-sized write and read per edge. Like :meth:`update`,
        it does not check the batch's values.
        """
        _check_mapping(batch)
        if self.world_size != 1 or not self._plain_step():
            self.update(batch)
            return
        weights, biases = self.optimizer.param_groups
        with torch.no_grad():
            data_state, model_state = self.estimator.phases(self.model, batch, self.generator)
            ascend_log_likelihood_(self.model, data_state, model_state, weight_rate=weights["lr"], bias_rate=biases["lr"])
        self._finish_step()

    def _batch_gradient(self, batch: State, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            data_state, model_state = self.estimator.phases(self.model, batch, generator)
            return log_likelihood_gradient(self.model, data_state, model_state)

    def _all_reduced_gradient(self, shard: State) -> dict[str, torch.Tensor]:
        self._join_ranks()
        rows = next(iter(shard.values())).shape[0]
        if rows:
            local = self._batch_gradient(shard, self._rank_generator)
        else:
            local = {name: torch.zeros_like(parameter) for name, parameter in self.model.named_parameters()}
        gradient, _ = data_parallel.average_over_ranks(local, rows)
        return gradient

    def _join_ranks(self) -> None:
        """Copy rank 0's parameters to every rank and set up this rank's generator, on first use."""
        if self._rank_generator is not None:
            return
        if self.generator is None:
            raise ValueError(
                "data-parallel training needs a torch.Generator, because ranks other than 0 seed their own "
                "generators from it; pass generator=torch.Generator().manual_seed(seed) with the same seed on every rank"
            )
        data_parallel.broadcast_parameters(self.model)
        self._rank_generator = data_parallel.rank_generator(self.generator)

    def apply_gradient(self, gradient: Mapping[str, torch.Tensor]) -> None:
        """Take one optimizer step along an ascent direction keyed like ``model.named_parameters()``.

        Raises :class:`DivergenceError` if a parameter is non-finite or too large afterwards.
        """
        if self._plain_step():
            # Without momentum or weight decay, SGD's step is p + lr * g. Adding it in place skips the
            # negated gradient copies and the optimizer's bookkeeping, and rounds the same way.
            with torch.no_grad():
                for group, names in zip(self.optimizer.param_groups, self._group_names):
                    for parameter, name in zip(group["params"], names):
                        parameter.add_(gradient[name], alpha=group["lr"])
        else:
            for name, parameter in self.model.named_parameters():
                parameter.grad = -gradient[name]
            self.optimizer.step()
        self._finish_step()

    def _finish_step(self) -> None:
        self.step += 1
        # NOTE: this check reads a flag back from the device after every update, a synchronisation on a GPU.
        self.check_finite(f"at epoch {self.epoch + 1}, step {self.step}")

    def _plain_step(self) -> bool:
        """Tell whether an SGD step is ``p += lr * gradient`` alone (no momentum, weight decay or Nesterov)."""
        return all(
            group["momentum"] == 0 and group["weight_decay"] == 0 and not group["nesterov"] and not group["maximize"]
            for group in self.optimizer.param_groups
        )

    def check_finite(self, when: str) -> None:
        """Raise :class:`DivergenceError` naming the first diverged parameter and index.

        A parameter has diverged when it is NaN or infinite, or when its magnitude
        exceeds ``config.max_abs_parameter`` (exploding weights). ``when`` is the
        moment of the check, e.g. ``"at epoch 2, step 40"`` or ``"before training"``.
        """
        limit = self.config.max_abs_parameter
        # One min-max pass per parameter and a single read-back; the search below runs only on failure.
        with torch.no_grad():
            extremes = torch.stack([extreme for p in self.model.parameters() for extreme in torch.aminmax(p)])
        if bool(extremes.abs().max() <= limit):  # aminmax propagates NaN, and NaN compares false
            return
        for name, parameter in self.model.named_parameters():
            # One comparison finds both kinds: NaN compares false and inf exceeds any limit.
            bad = ~(parameter.detach().abs() <= limit)
            if not bool(bad.any()):
                continue
            index = tuple(int(i) for i in bad.nonzero()[0])
            value = parameter[index].item()
            if math.isfinite(value):
                problem = f"exceeds max_abs_parameter={limit:g} {when} (first at index {index}: {value:.4g})"
            else:
                problem = f"is non-finite {when} (first at index {index}: {value})"
            raise DivergenceError(
                f"parameter {name} {problem} with learning_rate={self.config.learning_rate}; "
                "lower the learning rate or add weight decay"
            )

    def fit(
        self,
        data: Mapping[str, torch.Tensor],
        *,
        callback: Callable[["Trainer", dict], None] | None = None,
        progress: bool = False,
        checkpoint: str | os.PathLike | EpochCheckpoint | None = None,
    ) -> list[dict]:
        """Train for the configured number of epochs on ``data`` (layer name to ``(n, size)``).

        Training starts at epoch :attr:`epoch`, so after :meth:`load_state_dict` (or
        :func:`~ebmgraph.learning.resume.load_training_checkpoint`) it runs only the
        remaining epochs.

        Parameters
        ----------
        data : dict of str to Tensor
            The data layers, each ``(n, size)``, and no other layer; checked once here.
        callback : callable, optional
            ``callback(trainer, record)`` runs after each epoch and may add figures
            to ``record``.
        progress : bool
            Show a progress bar.
        checkpoint : str, PathLike or EpochCheckpoint, optional
            File for a training checkpoint (model and :meth:`state_dict`), written
            atomically before the first epoch and after each completed epoch, after
            ``callback``.

        Returns
        -------
        list of dict
            :attr:`history`.

        Raises
        ------
        DivergenceError
            A parameter became non-finite or exceeded ``config.max_abs_parameter``.
            The message names the epoch, step and parameter and, with
            ``checkpoint``, the file and epoch of the last good checkpoint, which
            is left as it was.
        """
        layers = self.estimator.data_layers(self.model)
        data = self.model.check_state(data, required=layers)
        ignored = [name for name in data if name not in layers]
        if ignored:
            raise ValueError(
                f"data has layer {ignored[0]!r}, which is not a data layer of this estimator (its data layers are {list(layers)}); "
                "declare the layer visible, pass clamped=[...] to the estimator, or leave it out of the data"
            )
        data = {name: data[name] for name in layers}
        n_rows = next(iter(data.values())).shape[0]
        if n_rows == 0:
            raise ValueError(f"the training data is empty (0 rows in layers {list(layers)})")
        self.check_finite("before training")
        saver = self._epoch_checkpoint(checkpoint)

        epochs = range(self.epoch, self.config.epochs)
        if progress:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc="epochs", unit="epoch", initial=self.epoch, total=self.config.epochs)
        for _ in epochs:
            record = self._run_epoch_keeping_checkpoint(data, n_rows, saver)
            if callback is not None:
                callback(self, record)
            self.history.append(record)
            if saver is not None:
                saver.save(self)
            if progress:
                epochs.set_postfix({k: f"{v:.4g}" for k, v in record.items() if isinstance(v, float)})
            logger.info("epoch %d: %s", self.epoch, ", ".join(f"{k}={v:.6g}" for k, v in record.items() if isinstance(v, float)))
        return self.history

    def _epoch_checkpoint(self, checkpoint) -> EpochCheckpoint | None:
        """Resolve fit's ``checkpoint`` argument and write the starting state, on rank 0 only."""
        if checkpoint is None or not data_parallel.is_main_process():
            # NOTE: under torch.distributed only rank 0's chains and generator are saved, so a
            # resumed data-parallel run is not bit-identical to an uninterrupted one.
            return None
        saver = checkpoint if isinstance(checkpoint, EpochCheckpoint) else EpochCheckpoint(checkpoint)
        # The state before the next epoch is the restart point if that epoch diverges.
        saver.save(self)
        return saver

    def _run_epoch_keeping_checkpoint(self, data: State, n_rows: int, saver: EpochCheckpoint | None) -> dict:
        """Run one epoch; on divergence, add the kept checkpoint to the error message."""
        try:
            return self._run_epoch(data, n_rows)
        except DivergenceError as error:
            if saver is None:
                raise
            raise DivergenceError(
                f"{error}. The last good checkpoint, after epoch {saver.epoch}, is kept in {saver.path}"
            ) from error

    def _run_epoch(self, data: State, n_rows: int) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate_at(self.epoch)
        for index in self._batch_indices(n_rows):
            batch = {name: tensor[index] for name, tensor in data.items()}
            self.fit_batch(batch)
        self.epoch += 1
        error = self._monitor_error(data, n_rows)
        return {"epoch": self.epoch, "step": self.step, "reconstruction_error": error}

    def _batch_indices(self, n_rows: int):
        """Rows of every mini-batch of one epoch that this process reads (its shard in data-parallel training)."""
        options = {"shuffle": self.config.shuffle, "generator": self.generator, "device": self.model.device}
        if self.world_size == 1:
            return iterate_batches(n_rows, self.config.batch_size, **options)
        self._join_ranks()
        return data_parallel.sharded_batches(n_rows, self.config.batch_size, **options)

    def _monitor_error(self, data: State, n_rows: int) -> float:
        """Reconstruction error of the first ``monitor_rows`` rows, of which each rank measures a share in data-parallel training."""
        n_monitor = min(self.monitor_rows, n_rows)
        if self.world_size == 1:
            monitor = {name: tensor[:n_monitor] for name, tensor in data.items()}
            return reconstruction_error(self.model, monitor, clamped=list(data))

        rows = data_parallel.shard_rows(n_monitor)
        n_local = rows.stop - rows.start
        local = 0.0
        if n_local:
            local = reconstruction_error(self.model, {name: tensor[rows] for name, tensor in data.items()}, clamped=list(data))
        # Weighting each rank's mean by its rows gives the mean over all monitored rows.
        error = torch.tensor(local, dtype=torch.float64, device=self.model.device)
        mean, _ = data_parallel.average_over_ranks({"reconstruction_error": error}, n_local)
        return float(mean["reconstruction_error"])

    def state_dict(self) -> dict:
        """Optimizer, estimator, generator state and counters, for resuming with :meth:`load_state_dict`.

        The estimator's class name and the configuration are stored too, so that a
        resume with another estimator is rejected and one with another
        configuration is logged.
        """
        return {
            "optimizer": self.optimizer.state_dict(),
            "estimator": self.estimator.state_dict(),
            "estimator_class": type(self.estimator).__name__,
            "config": asdict(self.config),
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
        if int(saved["epoch"]) > self.config.epochs:
            # fit() would run no epoch and return a model trained for more epochs than config.epochs.
            raise ValueError(
                f"trainer state was saved after epoch {int(saved['epoch'])}, but this trainer's config has epochs={self.config.epochs}; "
                f"set epochs to at least {int(saved['epoch'])}"
            )
        self._check_saved_setup(saved)
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

    def _check_saved_setup(self, saved: Mapping) -> None:
        """Reject a state saved with another estimator class; log configuration fields that differ."""
        saved_class = saved.get("estimator_class")
        if saved_class is not None and saved_class != type(self.estimator).__name__:
            raise ValueError(
                f"trainer state was saved with estimator {saved_class}, but this trainer uses {type(self.estimator).__name__}; "
                "resume with the same estimator"
            )
        current = asdict(self.config)
        changed = {key: (value, current.get(key)) for key, value in saved.get("config", {}).items() if current.get(key) != value}
        # Under a constant learning rate, more epochs only extend the run: the epochs already done are the same.
        if current.get("learning_rate_schedule") == "constant" and saved.get("config", {}).get("learning_rate_schedule") == "constant":
            changed.pop("epochs", None)
        if changed:
            described = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in sorted(changed.items()))
            logger.warning("resuming with a changed training configuration (%s); the run will differ from an uninterrupted one", described)


def _check_mapping(batch: object) -> None:
    if not isinstance(batch, Mapping):
        raise TypeError(f"a batch must be a mapping from layer name to tensor, such as {{'v': rows}}; got {type(batch).__name__}")
