"""Training checkpoints written after every epoch, and resuming a run from one.

A training checkpoint is an ordinary checkpoint (see :mod:`ebmgraph.checkpoint`)
whose training state is ``{"trainer": Trainer.state_dict()}``. That state contains
the optimizer's momentum buffers, the estimator's persistent chains, the state of
the trainer's generator, the epoch and step counters and the per-epoch history.
With the model's parameters it is everything the next epoch reads, so on the CPU
a resumed run ends with the same parameters, bit for bit, as one that was never
interrupted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ebmgraph.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from ebmgraph.learning.trainer import Trainer

__all__ = ["EpochCheckpoint", "save_training_checkpoint", "load_training_checkpoint", "TRAINER_KEY"]

logger = logging.getLogger(__name__)

TRAINER_KEY = "trainer"
"""Key of the trainer state inside a checkpoint's training state."""


def save_training_checkpoint(path: str | os.PathLike, trainer: "Trainer", *, metadata: dict | None = None) -> Path:
    """Write ``trainer.model`` and ``trainer.state_dict()`` to ``path`` atomically.

    Raises ``ValueError`` (and leaves ``path`` as it was) if a parameter is NaN or infinite.
    """
    return save_checkpoint(path, trainer.model, training={TRAINER_KEY: trainer.state_dict()}, metadata=metadata)


def load_training_checkpoint(path: str | os.PathLike, trainer: "Trainer") -> dict:
    """Restore ``trainer`` (its model's parameters and its own state) from a training checkpoint.

    The parameters are copied into the existing ``trainer.model``, so the optimizer
    keeps acting on the same tensors. Call :meth:`Trainer.fit` afterwards to run the
    remaining epochs.

    Returns
    -------
    dict
        The metadata stored with the checkpoint.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CheckpointError
        The file is damaged, contains no trainer state, or was written for a model
        with another graph or dtype; the message names the file.
    ValueError
        The trainer state does not fit the trainer (another estimator, or
        optimizer buffers of other shapes).
    """
    path = Path(path)
    saved, training, metadata = load_checkpoint(path, map_location=trainer.model.device)
    if TRAINER_KEY not in training:
        raise CheckpointError(
            f"checkpoint {path} contains no trainer state (training keys: {sorted(training)}); "
            "write it with Trainer.fit(checkpoint=...) or save_training_checkpoint"
        )
    expected, found = trainer.model.graph.to_dict(), saved.graph.to_dict()
    if found != expected:
        raise CheckpointError(f"checkpoint {path} was written for the graph {saved.graph}, but the trainer's model is {trainer.model.graph}")
    if saved.dtype != trainer.model.dtype:
        raise CheckpointError(f"checkpoint {path} contains {saved.dtype} parameters, but the trainer's model uses {trainer.model.dtype}")

    with torch.no_grad():
        trainer.model.load_state_dict(saved.state_dict())
    trainer.load_state_dict(training[TRAINER_KEY])
    logger.info("resumed training from %s after epoch %d, step %d", path, trainer.epoch, trainer.step)
    return metadata


class EpochCheckpoint:
    """Writes a training checkpoint to one file, replacing it atomically each time.

    Pass one (or just a path) to :meth:`Trainer.fit` as ``checkpoint``: it saves
    before the first epoch it runs and after every completed epoch. A save happens
    only after the epoch's updates passed the divergence checks, so when training
    diverges the file still contains the last good epoch.

    Parameters
    ----------
    path : str or PathLike
    metadata : dict, optional
        JSON-serialisable facts stored with every save (command, seed, protocol).

    Attributes
    ----------
    epoch : int or None
        Epoch count of the last save by this object (None before the first).
    """

    def __init__(self, path: str | os.PathLike, *, metadata: dict | None = None):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"checkpoint path must be a str or PathLike, got {type(path).__name__}")
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"checkpoint path {self.path} is a folder; pass a file name such as {self.path / 'training.pt'}")
        self.metadata = dict(metadata or {})
        self.epoch: int | None = None

    def save(self, trainer: "Trainer") -> Path:
        """Write ``trainer``'s model and state to :attr:`path` and remember its epoch."""
        save_training_checkpoint(self.path, trainer, metadata=self.metadata)
        self.epoch = trainer.epoch
        logger.info("saved training checkpoint %s after epoch %d, step %d", self.path, trainer.epoch, trainer.step)
        return self.path

    def __repr__(self) -> str:
        return f"EpochCheckpoint({str(self.path)!r}, epoch={self.epoch})"
