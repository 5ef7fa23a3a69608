"""Save and load models without executing code from the file.

A checkpoint is a ``torch.save`` archive of plain containers: the graph declaration
as a JSON string, the parameters as tensors, and optional training state (optimizer,
persistent chains, generator state, counters) and JSON metadata. Loading uses
``torch.load(weights_only=True)``, whose unpickler accepts only tensors and
primitive containers and refuses any other object, so loading a crafted file
cannot run code. Writes go to a temporary file in the same folder, are flushed
to disk and then renamed over the target, so an interrupted save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path

import torch

from ebmgraph._io import write_atomic
from ebmgraph.graph import Graph
from ebmgraph.model import EnergyModel
from ebmgraph.presets import DeepRelationalModel

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "MODEL_CLASSES"]

logger = logging.getLogger(__name__)

FORMAT = "ebmgraph-checkpoint"
VERSION = 1

MODEL_CLASSES = {"EnergyModel": EnergyModel, "DeepRelationalModel": DeepRelationalModel}
"""Model classes a checkpoint may name; loading builds only these."""


# torch.save writes a zip archive, or with its legacy format a pickle, which starts with the PROTO opcode.
_TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or not an ebmgraph checkpoint."""


def save_checkpoint(path: str | os.PathLike, model: EnergyModel, *, training: dict | None = None, metadata: dict | None = None) -> Path:
    """Write ``model`` (and optional training state and metadata) to ``path`` atomically.

    Parameters
    ----------
    path : str or PathLike
    model : EnergyModel
    training : dict, optional
        Tensors, numbers, strings and containers of them, e.g. ``Trainer.state_dict()``.
    metadata : dict, optional
        JSON-serialisable facts about the run (command, seed, figures).
    """
    path = Path(path)
    kind = type(model).__name__
    if kind not in MODEL_CLASSES:
        raise TypeError(f"cannot checkpoint a {kind}; supported model classes are {sorted(MODEL_CLASSES)}")
    parameters = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    for name, tensor in parameters.items():
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"parameter {name} contains NaN or infinite values; not saving a diverged model")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "graph": json.dumps(model.graph.to_dict()),
        "dtype": str(model.dtype).removeprefix("torch."),
        "parameters": parameters,
        "checksum": _checksum(parameters),
        "training": training or {},
        "metadata": json.dumps(metadata or {}),
    }
    return write_atomic(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> tuple[EnergyModel, dict, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    model : EnergyModel
        The saved class (:class:`EnergyModel` or :class:`DeepRelationalModel`) with
        the saved dtype and parameters, on ``map_location``.
    training : dict
        The saved training state (empty if none).
    metadata : dict

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CheckpointError
        The file is truncated, corrupted, contains anything but plain data, or is not
        an ebmgraph checkpoint; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass a .pt file written by save_checkpoint")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    with path.open("rb") as handle:
        start = handle.read(4)
    if start and not start.startswith(_TORCH_FILE_STARTS):
        # The file is neither a zip archive (torch.save) nor a pickle (its legacy format), so it is a text or foreign file.
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted: it is not a file written by torch.save (it starts with {start!r})")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path} contains objects other than plain data and was not loaded ({_unpickling_detail(error)})"
        ) from None
    except Exception as error:  # noqa: BLE001 - any failure to parse untrusted bytes means a damaged file
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ebmgraph checkpoint (no '{FORMAT}' format marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {payload.get('version')!r}; this ebmgraph reads version {VERSION}")
    kind = payload.get("kind")
    if not isinstance(kind, str) or kind not in MODEL_CLASSES:
        raise CheckpointError(f"checkpoint {path} names model class {kind!r}; expected one of {sorted(MODEL_CLASSES)}")

    try:
        graph = Graph.from_dict(json.loads(payload["graph"]))
        dtype = getattr(torch, payload["dtype"])
        model = MODEL_CLASSES[kind](graph, init_std=0.0, dtype=dtype, device=map_location)
        model.load_state_dict(payload["parameters"])
        metadata = json.loads(payload["metadata"])
        training = payload["training"]
    except KeyError as error:
        raise CheckpointError(f"checkpoint {path} is inconsistent: it has no entry {error}") from None
    except (TypeError, ValueError, AttributeError, RuntimeError) as error:
        # torch's state-dict errors span several lines; the message stays on one.
        raise CheckpointError(f"checkpoint {path} is inconsistent: {' '.join(str(error).split())}") from None
    if "checksum" not in payload:
        logger.warning("checkpoint %s has no parameter checksum (an early format); its parameters are not verified", path)
    elif payload["checksum"] != _checksum(payload["parameters"]):
        raise CheckpointError(f"checkpoint {path} is corrupted: its parameters do not match the stored checksum")
    if not isinstance(metadata, dict) or not isinstance(training, dict):
        raise CheckpointError(f"checkpoint {path} is inconsistent: metadata and training state must be dicts")
    return model, training, metadata


def _unpickling_detail(error: Exception) -> str:
    """Extract the line of torch's weights-only error that names the rejected object or opcode.

    The rest of torch's text advises loading with ``weights_only=False``, which
    would run the file's code, so it is left out of the message.
    """
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    for line in str(error).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith(boilerplate):
            return line
    return "the file's pickle names an object outside tensors and plain containers"


def _checksum(parameters: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(parameters):
        tensor = parameters[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
