"""The protocol options that each model family and experiment of the command line reads.

``ebmgraph train``, ``compare`` and ``reproduce`` share one group of protocol
options (``--epochs``, ``--lr``, ...), but no model reads all of them: the DNN
has no generative stage, the DBN no mean-field training, an RBM no labels. An
option given to a command whose models would not read it is rejected, so that a
run never reports figures for settings it silently did not use. The parser
leaves these options at ``None`` unless given, and :func:`protocol_from` fills
in :class:`~ebmgraph.experiments.Protocol`'s defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from ebmgraph.experiments import Protocol

__all__ = ["PROTOCOL_FIELDS", "FAMILY_OPTIONS", "given_options", "protocol_from", "reject_unused"]

PROTOCOL_FIELDS = {
    "hidden": "hidden",
    "epochs": "epochs",
    "pretrain_epochs": "pretrain_epochs",
    "finetune_epochs": "finetune_epochs",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "dbm_lr": "dbm_learning_rate",
    "finetune_lr": "finetune_learning_rate",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "steps": "mean_field_steps",
    "lr_schedule": "learning_rate_schedule",
    "y_units": "y_units",
}
"""Protocol option (argparse ``dest``) to :class:`~ebmgraph.experiments.Protocol` field."""

_PRETRAINED = {"hidden", "pretrain_epochs", "batch_size", "lr", "momentum", "weight_decay"}
_GENERATIVE = _PRETRAINED | {"epochs", "steps", "lr_schedule", "y_units"}
_FINE_TUNED = {"finetune_epochs", "finetune_lr"}

FAMILY_OPTIONS: dict[str, frozenset[str]] = {
    "drm": frozenset(_GENERATIVE),
    "dbm": frozenset(_GENERATIVE | {"dbm_lr"}),
    # The DBN is greedy pretraining alone, and its top RBM always has softmax labels.
    "dbn": frozenset(_PRETRAINED),
    # Back-propagation takes the place of generative training, at --finetune-lr for --epochs.
    "dnn": frozenset({"hidden", "epochs", "batch_size", "finetune_lr"}),
    "rbm": frozenset({"hidden", "epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_schedule"}),
    "graph": frozenset({"epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_schedule", "steps"}),
}
"""Protocol options that training each model reads; ``fine-X`` reads X's and the fine-tuning ones."""


def family_options(family: str) -> frozenset[str]:
    """Protocol options read by ``run_family(family, ...)``, ``fine-*`` families included."""
    base = family.removeprefix("fine-")
    options = FAMILY_OPTIONS[base]
    return options | _FINE_TUNED if family != base else options


def train_options(family: str) -> frozenset[str]:
    """Protocol options read by ``ebmgraph train --family family``.

    The drm, dbm and dbn families are also fine-tuned, and their mean-field hidden
    means (for ``ebmgraph generate``) take ``--steps`` sweeps.
    """
    if family in ("drm", "dbm", "dbn"):
        return FAMILY_OPTIONS[family] | _FINE_TUNED | {"steps"}
    return FAMILY_OPTIONS[family]


def given_options(args: argparse.Namespace) -> list[str]:
    """Protocol options given on the command line, in declaration order."""
    return [dest for dest in PROTOCOL_FIELDS if getattr(args, dest, None) is not None]


def reject_unused(args: argparse.Namespace, used: Iterable[str], context: str) -> None:
    """Raise ``ValueError`` naming the first given protocol option that ``context`` does not read."""
    used = set(used)
    for dest in given_options(args):
        if dest not in used:
            flags = ", ".join(_flag(name) for name in PROTOCOL_FIELDS if name in used)
            raise ValueError(f"{_flag(dest)} does not apply to {context}, which reads only {flags}")


def protocol_from(args: argparse.Namespace) -> Protocol:
    """Build the protocol from the given options and :class:`~ebmgraph.experiments.Protocol`'s defaults."""
    values = {PROTOCOL_FIELDS[dest]: getattr(args, dest) for dest in given_options(args)}
    if "hidden" in values:
        values["hidden"] = tuple(values["hidden"])
    return Protocol(**values)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")
