"""Model families trained and evaluated under one classification protocol.

Every family uses the same chain of layers ``x - h1 - ... - hL - y`` and the same
data, and differs only in how its weights are learned:

=============  ============================================================================
family         training
=============  ============================================================================
``dnn``        random initialisation, back-propagation only (``epochs``)
``dbn``        bottom-up RBMs ``x -> h1 -> ...``; the top RBM joins ``h(L-1)`` and ``y`` to
               ``hL``; classified by the exact ``p(y | h(L-1))`` of the top RBM
``dbm``        bottom-up RBM pretraining, then the DBM recipe (mean-field data term with x
               and y clamped, persistent chains); classified by mean field
``drm``        outside-in RBM pretraining, then the DRM recipe (:class:`MeanFieldCD`);
               classified by mean field
``fine-*``     the trained model unrolled into ``x -> h1 -> ... -> y`` and fine-tuned
=============  ============================================================================

NOTE: the DRM paper does not describe how its DBN and DBM baselines read out a label
without fine-tuning; the label layer on top, as here, is this library's choice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace

import torch

from ebmgraph import distributed as data_parallel
from ebmgraph.graph import Graph
from ebmgraph.learning.algorithms import CD, MeanFieldCD, MeanFieldPCD
from ebmgraph.learning.finetune import FeedForward, finetune, unroll
from ebmgraph.learning.pretrain import bottom_up_order, greedy_pretrain, outside_in_order
from ebmgraph.learning.resume import EpochCheckpoint, load_training_checkpoint
from ebmgraph.learning.trainer import Trainer, TrainingConfig
from ebmgraph.model import EnergyModel
from ebmgraph.presets import DeepRelationalModel, drm

__all__ = ["Protocol", "ClassificationData", "DeepBeliefNet", "FAMILIES", "FamilyResult", "run_family", "run_families", "mean_field_error", "readout_error"]

logger = logging.getLogger(__name__)

FAMILIES = ("dnn", "dbn", "fine-dbn", "dbm", "fine-dbm", "drm", "fine-drm")


@dataclass(frozen=True)
class Protocol:
    """The training protocol shared by every family (the DRM paper's values by default).

    Attributes
    ----------
    hidden : tuple of int
        Sizes of ``h1 .. hL``.
    epochs : int
        Epochs of the generative training (DBM and DRM recipes), and of the
        DNN's back-propagation, which takes the place of that stage.
    pretrain_epochs : int
        Epochs of each pretraining RBM.
    finetune_epochs : int
        Epochs of back-propagation fine-tuning of the ``fine-*`` families.
    batch_size : int
        Shared by every stage.
    learning_rate, momentum, weight_decay
        Pretraining and generative training. Fine-tuning and the DNN take plain
        SGD steps at ``finetune_learning_rate``.
    finetune_learning_rate : float
    mean_field_steps : int
        T, the mean-field sweeps of training and read-out.
    y_units : str
        Unit family of the label layer of the DRM and the DBM (the DBN's is softmax).
    learning_rate_schedule : {"constant", "linear"}
        Learning-rate schedule of the generative training (pretraining keeps a
        constant rate).
    dbm_learning_rate : float, optional
        Learning rate of the DBM's generative training (after pretraining) in
        place of ``learning_rate``; the persistent chains of the DBM recipe
        diverge at the DRM paper's 0.1.
    """

    hidden: tuple[int, ...] = (400, 400)
    epochs: int = 50
    pretrain_epochs: int = 50
    finetune_epochs: int = 10
    batch_size: int = 20
    learning_rate: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    finetune_learning_rate: float = 0.1
    mean_field_steps: int = 10
    y_units: str = "bernoulli"
    learning_rate_schedule: str = "constant"
    dbm_learning_rate: float | None = None

    def config(self, epochs: int, *, learning_rate_schedule: str = "constant", learning_rate: float | None = None) -> TrainingConfig:
        return TrainingConfig(
            epochs=epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate if learning_rate is None else learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            learning_rate_schedule=learning_rate_schedule,
        )


@dataclass
class ClassificationData:
    """Images in [0, 1] of shape ``(n, n_pixels)`` and int64 labels ``(n,)`` for each split."""

    train_x: torch.Tensor
    train_labels: torch.Tensor
    validation_x: torch.Tensor
    validation_labels: torch.Tensor
    test_x: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    n_classes: int = 10

    def train_y(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.train_labels, self.n_classes).to(dtype=dtype, device=self.train_x.device)


@dataclass
class FamilyResult:
    """Measurements of one family run."""

    family: str
    validation_error: float
    test_error: float | None
    seconds: float
    history: list = field(default_factory=list)
    model: object = None

    def summary(self) -> dict:
        record = asdict(self)
        record.pop("model")
        return record


def mean_field_error(
    model: DeepRelationalModel,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 1000,
    distributed: bool | None = None,
) -> float:
    """Classification error of the mean-field read-out ``argmax E[y | x]``.

    In data-parallel use (``distributed``, see :func:`ebmgraph.distributed.resolve`)
    each rank classifies its share of the rows and the counts are all-reduced, so
    every rank of the process group must call this.
    """
    return readout_error(lambda rows: model.classify(rows, steps), x, labels, batch_size, distributed=distributed)


def _chain(model: EnergyModel) -> list[str]:
    return list(model.graph.layer_names)


def _label_model(data: ClassificationData, protocol: Protocol, generator) -> DeepRelationalModel:
    n_pixels = data.train_x.shape[1]
    return drm(
        n_pixels, protocol.hidden, data.n_classes, y_units=protocol.y_units, generator=generator, device=data.train_x.device
    )


def _validation_callback(data: ClassificationData, steps: int):
    """Add the mean-field validation error to each epoch's record."""

    def callback(trainer: Trainer, record: dict) -> None:
        record["validation_error"] = mean_field_error(
            trainer.model, data.validation_x, data.validation_labels, steps=steps, distributed=trainer.world_size > 1
        )
        logger.info("epoch %d: validation error %.4f", record["epoch"], record["validation_error"])

    return callback


def train_drm(
    data: ClassificationData,
    protocol: Protocol,
    generator: torch.Generator | None,
    *,
    progress: bool = False,
    checkpoint: str | os.PathLike | EpochCheckpoint | None = None,
    resume: str | os.PathLike | None = None,
) -> DeepRelationalModel:
    """Outside-in pretraining, then the DRM recipe, on ``data``'s training split.

    The per-epoch records are in ``model.training_history``. ``checkpoint`` and
    ``resume`` are as in :func:`run_family`.
    """
    model = _label_model(data, protocol, generator)
    batch = {"x": data.train_x, "y": data.train_y(model.dtype)}
    if protocol.pretrain_epochs and resume is None:
        greedy_pretrain(model, batch, outside_in_order(model), protocol.config(protocol.pretrain_epochs), generator=generator, progress=progress)
    config = protocol.config(protocol.epochs, learning_rate_schedule=protocol.learning_rate_schedule)
    trainer = Trainer(model, MeanFieldCD(protocol.mean_field_steps), config, generator=generator)
    if resume is not None:
        load_training_checkpoint(resume, trainer)
    model.training_history = trainer.fit(batch, callback=_validation_callback(data, protocol.mean_field_steps), progress=progress, checkpoint=checkpoint)
    return model


def train_dbm(
    data: ClassificationData,
    protocol: Protocol,
    generator: torch.Generator | None,
    *,
    progress: bool = False,
    checkpoint: str | os.PathLike | EpochCheckpoint | None = None,
    resume: str | os.PathLike | None = None,
) -> DeepRelationalModel:
    """Bottom-up pretraining, then mean field with persistent chains, with y on top of hL.

    ``checkpoint`` and ``resume`` are as in :func:`run_family`.
    """
    model = _label_model(data, protocol, generator)
    batch = {"x": data.train_x, "y": data.train_y(model.dtype)}
    if protocol.pretrain_epochs and resume is None:
        order = bottom_up_order(model, _chain(model)[:-1]) + [("y", model.hidden_names[-1])]
        greedy_pretrain(model, batch, order, protocol.config(protocol.pretrain_epochs), generator=generator, progress=progress)
    estimator = MeanFieldPCD(1, n_chains=100, mean_field_steps=protocol.mean_field_steps)
    config = protocol.config(protocol.epochs, learning_rate_schedule=protocol.learning_rate_schedule, learning_rate=protocol.dbm_learning_rate)
    trainer = Trainer(model, estimator, config, generator=generator)
    if resume is not None:
        load_training_checkpoint(resume, trainer)
    model.training_history = trainer.fit(batch, callback=_validation_callback(data, protocol.mean_field_steps), progress=progress, checkpoint=checkpoint)
    return model


class DeepBeliefNet:
    """Bottom-up RBMs ``x -> h1 -> ... -> h(L-1)`` and a top RBM joining ``h(L-1)`` and ``y`` to ``hL``.

    The weights live on the chain ``x - h1 - ... - hL - y`` of :attr:`model`, so
    :func:`unroll` fine-tunes a DBN exactly like a DRM. :attr:`top` is the top RBM.
    """

    def __init__(self, model: DeepRelationalModel, top: EnergyModel):
        self.model = model
        self.top = top

    def label_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``p(y | h(L-1))`` of the top RBM, ``h(L-1)`` from the bottom-up pass; ``(batch, n_classes)``."""
        names = self.model.hidden_names
        representation = x
        with torch.no_grad():
            for below, above in zip(("x",) + names[:-2], names[:-1]):
                representation = torch.sigmoid(self.model.biases[above] + representation @ self.model.weight(below, above))
            n_classes = self.model.n_classes
            labels = torch.eye(n_classes, dtype=x.dtype, device=x.device)
            below = names[-2] if len(names) > 1 else "x"
            free = torch.stack(
                [self.top.free_energy({below: representation, "y": labels[k].expand(x.shape[0], -1)}) for k in range(n_classes)],
                dim=1,
            )
        return torch.softmax(-free, dim=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Most probable label under :meth:`label_probabilities`, shape ``(batch,)``, dtype int64."""
        return self.label_probabilities(x).argmax(dim=1)

    def top_state(self) -> dict:
        """Return the top RBM's graph description and parameters, to save beside :attr:`model`."""
        return {"graph": self.top.graph.to_dict(), "state": self.top.state_dict()}

    @classmethod
    def from_top_state(cls, model: DeepRelationalModel, saved: dict) -> "DeepBeliefNet":
        """Rebuild a DBN from its chain model and a :meth:`top_state`."""
        top = EnergyModel(Graph.from_dict(saved["graph"]), dtype=model.dtype, device=model.device)
        top.load_state_dict(saved["state"])
        return cls(model, top)


def train_dbn(data: ClassificationData, protocol: Protocol, generator: torch.Generator | None, *, progress: bool = False) -> DeepBeliefNet:
    """Greedy bottom-up RBMs; the last joins the label layer and the top hidden layer.

    The label layer has softmax units whatever ``protocol.y_units`` is, the
    same as in the top RBM, which classifies by the free energy of each one-hot
    label.
    """
    model = _label_model(data, replace(protocol, y_units="softmax"), generator)
    names = model.hidden_names
    config = protocol.config(protocol.pretrain_epochs)
    below = "x"
    representation = data.train_x
    if len(names) > 1:
        greedy_pretrain(model, {"x": data.train_x}, bottom_up_order(model, ["x", *names[:-1]]), config, generator=generator, progress=progress)
        below = names[-2]
        with torch.no_grad():
            for lower, upper in zip(("x",) + names[:-2], names[:-1]):
                representation = torch.sigmoid(model.biases[upper] + representation @ model.weight(lower, upper))

    graph = Graph()
    graph.add_layer(below, model.graph[below].size, visible=True)
    graph.add_layer("y", data.n_classes, "softmax", visible=True)
    graph.add_layer(names[-1], model.graph[names[-1]].size)
    graph.add_edge(below, names[-1])
    graph.add_edge("y", names[-1])
    top = EnergyModel(graph, generator=generator, device=model.device)
    Trainer(top, CD(1), config, generator=generator).fit(
        {below: representation, "y": data.train_y(model.dtype)}, progress=progress
    )
    with torch.no_grad():
        model.weights[model.edge_key(below, names[-1])].copy_(top.weight(below, names[-1]))
        model.weights[model.edge_key(names[-1], "y")].copy_(top.weight(names[-1], "y"))
        model.biases[names[-1]].copy_(top.biases[names[-1]])
        model.biases["y"].copy_(top.biases["y"])
    return DeepBeliefNet(model, top)


def _finetuned(model: DeepRelationalModel, data: ClassificationData, protocol: Protocol, generator) -> FeedForward:
    network = unroll(model, _chain(model))
    network.training_history = finetune(
        network,
        data.train_x,
        data.train_labels,
        epochs=protocol.finetune_epochs,
        batch_size=protocol.batch_size,
        learning_rate=protocol.finetune_learning_rate,
        generator=generator,
    )
    return network


def run_family(
    family: str,
    data: ClassificationData,
    protocol: Protocol,
    *,
    generator: torch.Generator,
    progress: bool = False,
    trained: dict | None = None,
    checkpoint: str | os.PathLike | EpochCheckpoint | None = None,
    resume: str | os.PathLike | None = None,
) -> FamilyResult:
    """Train one family under ``protocol`` and measure its validation (and test) error.

    ``trained`` caches generative models between families, so ``fine-drm`` reuses
    the model that ``drm`` trained (pass the same dict to both calls).

    ``checkpoint`` (a file or :class:`~ebmgraph.learning.resume.EpochCheckpoint`)
    receives a training checkpoint after pretraining and after every epoch of the
    generative training of ``drm`` and ``dbm``. ``resume`` names such a file:
    pretraining is skipped, because the checkpoint contains its result, and the
    generative training continues from the saved epoch with the saved generator
    state. Called with the same data, protocol and seed, a resumed run ends on
    the CPU with the same parameters, bit for bit, as an uninterrupted one.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose from {list(FAMILIES)}")
    if (checkpoint is not None or resume is not None) and family.removeprefix("fine-") not in ("drm", "dbm"):
        raise ValueError(f"family {family!r} has no generative training stage to checkpoint or resume; only drm and dbm have one")
    trained = {} if trained is None else trained
    base = family.removeprefix("fine-")
    start = time.perf_counter()

    if family == "dnn":
        sizes = [data.train_x.shape[1], *protocol.hidden, data.n_classes]
        network = FeedForward(sizes, generator=generator, device=data.train_x.device)
        # Back-propagation gets the epochs of generative training, since it replaces that stage.
        network.training_history = finetune(network, data.train_x, data.train_labels, epochs=protocol.epochs,
                                            batch_size=protocol.batch_size, learning_rate=protocol.finetune_learning_rate,
                                            generator=generator)
        classify: Callable = lambda x: network(x).argmax(dim=1)
        model = network
    else:
        if base not in trained:
            trainers = {"drm": train_drm, "dbm": train_dbm, "dbn": train_dbn}
            resumable = {"checkpoint": checkpoint, "resume": resume} if base in ("drm", "dbm") else {}
            trained[base] = trainers[base](data, protocol, generator, progress=progress, **resumable)
        generative = trained[base]
        chain_model = generative.model if isinstance(generative, DeepBeliefNet) else generative
        if family.startswith("fine-"):
            network = _finetuned(chain_model, data, protocol, generator)
            classify = lambda x: network(x).argmax(dim=1)
            model = network
        elif isinstance(generative, DeepBeliefNet):
            classify = generative.classify
            model = generative
        else:
            classify = lambda x: generative.classify(x, protocol.mean_field_steps)
            model = generative

    validation_error = readout_error(classify, data.validation_x, data.validation_labels)
    test_error = None if data.test_x is None else readout_error(classify, data.test_x, data.test_labels)
    seconds = time.perf_counter() - start
    logger.info("%s: validation error %.4f, test error %s, %.0f s", family, validation_error, test_error, seconds)
    history = list(getattr(model, "training_history", []))
    return FamilyResult(family, validation_error, test_error, seconds, history=history, model=model)


def run_families(
    families: Iterable[str],
    data: ClassificationData,
    protocol: Protocol,
    *,
    generator: torch.Generator,
    progress: bool = False,
) -> Iterator[FamilyResult]:
    """Run :func:`run_family` for each family, each as if it ran alone; yield the results in order.

    Every family starts from the state ``generator`` has on the call, except that
    a ``fine-*`` family whose base family ran earlier here continues from the
    state that base family left (and reuses its model), as ``ebmgraph train``
    does. So no result depends on which families ran before it, and a list
    resumed after an interruption gives the numbers of an uninterrupted one.
    """
    start = generator.get_state()
    after: dict[str, torch.Tensor] = {}
    trained: dict = {}
    for family in families:
        base = family.removeprefix("fine-")
        generator.set_state(after[base] if family != base and base in after else start)
        result = run_family(family, data, protocol, generator=generator, progress=progress, trained=trained)
        if family == base:
            after[base] = generator.get_state()
        yield result


def readout_error(
    classify: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
    *,
    distributed: bool | None = None,
) -> float:
    """Fraction of rows whose ``classify(rows)`` differs from ``labels``, each rank counting its share in data-parallel use."""
    if x.shape[0] == 0:
        raise ValueError("cannot measure a classification error on empty data")

    def count_wrong(start: int, stop: int) -> int:
        return int((classify(x[start:stop]) != labels[start:stop]).sum())

    with torch.no_grad():
        wrong = data_parallel.sharded_sum(count_wrong, x.shape[0], chunk_size=batch_size, device=x.device, distributed=distributed)
    return wrong / x.shape[0]
