"""Gradient estimators: each returns a data-term state and a model-term state for one mini-batch.

The log-likelihood gradient is the difference of the sufficient statistics of the
two states (:func:`~ebmgraph.learning.statistics.log_likelihood_gradient`). The
estimators differ in how they fill the hidden layers of the data term and how
they approximate the model's expectation:

=====================  ==============================  =====================================
estimator              data term (visible clamped)     model term
=====================  ==============================  =====================================
:class:`CD`            conditional means (mean field   ``k`` Gibbs sweeps from the data
                       when hidden layers interact)
:class:`PCD`           as CD                           persistent chains, ``k`` sweeps per batch
:class:`MeanFieldPCD`  ``T`` mean-field sweeps         persistent chains (Salakhutdinov and
                                                       Hinton's DBM recipe)
:class:`MeanFieldCD`   ``T`` mean-field sweeps         visible layers drawn from the data
                                                       term's hidden means, then ``T``
                                                       mean-field sweeps with them clamped
                                                       (the DRM recipe of Nakashika et al.)
=====================  ==============================  =====================================

In every model term the last sweep's first block (the hidden layers next to the
data) is replaced by its conditional means given the final state, so the final
visible sample is paired with ``p(h | v_k)``, never with ``p(h | v_(k-1))``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any

import torch

from ebmgraph.chains import PersistentChains
from ebmgraph.learning.joint import JointPass, joint_pass_for
from ebmgraph.learning.statistics import block_means
from ebmgraph.model import EnergyModel, State
from ebmgraph.schedule import compile_schedule

__all__ = ["GradientEstimator", "CD", "PCD", "MeanFieldPCD", "MeanFieldCD", "make_estimator", "ESTIMATORS"]


class GradientEstimator(abc.ABC):
    """Produces the data-term and model-term states of a mini-batch.

    Parameters
    ----------
    clamped : iterable of str, optional
        The layers that hold data (the model's visible layers by default).
    """

    def __init__(self, clamped: Iterable[str] | None = None):
        self.clamped = None if clamped is None else tuple(clamped)

    def data_layers(self, model: EnergyModel) -> tuple[str, ...]:
        """Layers that a batch must provide."""
        layers = self.clamped if self.clamped is not None else model.graph.visible
        if not layers:
            raise ValueError("the model declares no visible layer; pass clamped=[...] to name the data layers")
        for name in layers:
            model.graph[name]
        return tuple(layers)

    @abc.abstractmethod
    def phases(self, model: EnergyModel, batch: State, generator: torch.Generator | None) -> tuple[State, State]:
        """Return ``(data_state, model_state)``, each with a value or mean for every layer."""

    def data_term(self, model: EnergyModel, batch: State, steps: int) -> State:
        """Hidden layers at their (mean-field) conditional means with the data clamped."""
        schedule = model.schedule(self.data_layers(model))
        # One sweep is exact when the hidden layers are independent given the data.
        sweeps = 1 if len(schedule.blocks) == 1 else steps
        return schedule.mean_field(batch, sweeps, validate=False)

    def state_dict(self) -> dict:
        """Persistent state to checkpoint (none for stateless estimators)."""
        return {}

    def load_state_dict(self, saved: dict) -> None:
        if saved:
            raise ValueError(f"{type(self).__name__} keeps no state, but a saved state with keys {sorted(saved)} was given")


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class CD(GradientEstimator):
    """Contrastive divergence CD-k (Hinton, 2002).

    The chain starts at the data (hidden layers at their data-term means) and runs
    ``k`` block-Gibbs sweeps of the unclamped schedule. Visible reconstructions are
    samples, and the hidden layers of the model term are ``p(h | v_k)``.

    Parameters
    ----------
    k : int
        Gibbs sweeps per mini-batch.
    mean_field_steps : int
        Mean-field sweeps of the data term when hidden layers interact (DBMs).
    """

    def __init__(self, k: int = 1, *, mean_field_steps: int = 10, clamped: Iterable[str] | None = None):
        super().__init__(clamped)
        self.k = _check_positive("k", k)
        self.mean_field_steps = _check_positive("mean_field_steps", mean_field_steps)

    def phases(self, model: EnergyModel, batch: State, generator: torch.Generator | None) -> tuple[State, State]:
        data_state = self.data_term(model, batch, self.mean_field_steps)
        schedule = model.schedule()
        chain = schedule.gibbs(data_state, self.k, generator=generator, validate=False)
        return data_state, block_means(schedule, chain)

    def __repr__(self):
        return f"CD(k={self.k})"


class PCD(GradientEstimator):
    """Persistent contrastive divergence (Tieleman, 2008).

    Chains persist between mini-batches and advance ``k`` sweeps per batch. They
    start from the biases-only model on first use, one per row of the batch
    unless ``n_chains`` is given.

    Where the data layers form one block and the hidden layers the other (an
    RBM), :meth:`phases` computes the data term's hidden means and the chains'
    last block with one product per edge over the stacked rows
    (:mod:`ebmgraph.learning.joint`). The states equal those of
    :meth:`data_term` and :meth:`model_term` up to rounding.
    """

    def __init__(
        self,
        k: int = 1,
        *,
        n_chains: int | None = None,
        mean_field_steps: int = 10,
        clamped: Iterable[str] | None = None,
    ):
        super().__init__(clamped)
        self.k = _check_positive("k", k)
        self.n_chains = None if n_chains is None else _check_positive("n_chains", n_chains)
        self.mean_field_steps = _check_positive("mean_field_steps", mean_field_steps)
        self.chains: PersistentChains | None = None
        self._saved_chains: dict | None = None
        self._joint: tuple | None = None

    def _chains(self, model: EnergyModel, batch_size: int, generator) -> PersistentChains:
        if self.chains is not None and self.chains.schedule.model is model:
            return self.chains
        schedule = _chain_schedule(model)
        if self._saved_chains is not None:
            self.chains = PersistentChains(schedule, self._saved_chains["state"])
            self.chains.n_sweeps = int(self._saved_chains["n_sweeps"])
            self._saved_chains = None
        else:
            self.chains = schedule.init_chains(self.n_chains or batch_size, generator=generator)
        return self.chains

    def model_term(self, model: EnergyModel, batch_size: int, generator: torch.Generator | None) -> State:
        chains = self._chains(model, batch_size, generator)
        state, means = chains.advance(self.k, generator=generator, return_means=True)
        return {**state, **{name: means[name] for name in chains.schedule.blocks[-1].layers}}

    def phases(self, model: EnergyModel, batch: State, generator: torch.Generator | None) -> tuple[State, State]:
        chains = self._chains(model, _batch_size(batch), generator)
        joint = self._joint_pass(model, chains.schedule)
        if joint is not None:
            with torch.no_grad():
                return joint.phases(chains, batch, self.k, generator)
        data_state = self.data_term(model, batch, self.mean_field_steps)
        return data_state, self.model_term(model, _batch_size(batch), generator)

    def _joint_pass(self, model: EnergyModel, schedule) -> JointPass | None:
        """Return the stacked data-and-model pass for ``schedule`` (:mod:`ebmgraph.learning.joint`), or None where it does not apply."""
        if self._joint is None or self._joint[0] is not schedule:
            self._joint = (schedule, joint_pass_for(model, self.data_layers(model), schedule))
        return self._joint[1]

    def state_dict(self) -> dict:
        if self.chains is None:
            return {} if self._saved_chains is None else {"chains": self._saved_chains}
        return {"chains": self.chains.state_dict()}

    def load_state_dict(self, saved: dict) -> None:
        self.chains = None
        self._saved_chains = saved.get("chains")

    def __repr__(self):
        return f"{type(self).__name__}(k={self.k}, n_chains={self.n_chains})"


class MeanFieldPCD(PCD):
    """Mean-field data term with a persistent-chain model term, the DBM recipe.

    Salakhutdinov and Hinton, "Deep Boltzmann machines" (AISTATS 2009): the data
    term runs ``mean_field_steps`` sweeps of mean field with the data clamped.
    It is :class:`PCD` itself under the recipe's name, because PCD's data term
    already runs those sweeps when hidden layers are joined.
    """


class MeanFieldCD(GradientEstimator):
    """The DRM learning recipe of Nakashika, Takiguchi and Ariki.

    Data term: every data layer clamped (``x`` and ``y`` for a DRM), ``steps``
    mean-field sweeps of the hidden layers from zero. Model term: each data layer
    is reconstructed from the data term's hidden means, as a sample from its
    conditional (or its mean with ``reconstruction="mean"``). The hidden layers
    then run ``steps`` mean-field sweeps with the reconstructions clamped,
    starting from the data term's means.

    NOTE: the paper does not say how the model term's hidden expectations are
    formed from the reconstructions; mean field with the reconstructions clamped,
    warm-started at the data term, is this library's reading.

    Parameters
    ----------
    steps : int
        Mean-field sweeps T (10 in the paper).
    reconstruction : {"sample", "mean"}
    """

    def __init__(self, steps: int = 10, *, reconstruction: str = "sample", clamped: Iterable[str] | None = None):
        super().__init__(clamped)
        self.steps = _check_positive("steps", steps)
        if reconstruction not in ("sample", "mean"):
            raise ValueError(f"reconstruction must be 'sample' or 'mean', got {reconstruction!r}")
        self.reconstruction = reconstruction

    def phases(self, model: EnergyModel, batch: State, generator: torch.Generator | None) -> tuple[State, State]:
        layers = self.data_layers(model)
        schedule = model.schedule(layers)
        data_state = schedule.mean_field(batch, self.steps, validate=False)

        reconstructed = {}
        for name in layers:
            conditional_input = model.input(name, data_state)
            units = model.graph[name].units
            if self.reconstruction == "sample":
                reconstructed[name] = units.sample(conditional_input, generator)
            else:
                reconstructed[name] = units.mean(conditional_input)
        hidden_start = {name: data_state[name] for name in schedule.free}
        model_state = schedule.mean_field({**reconstructed, **hidden_start}, self.steps, validate=False)
        return data_state, model_state

    def __repr__(self):
        return f"MeanFieldCD(steps={self.steps}, reconstruction={self.reconstruction!r})"


def _chain_schedule(model: EnergyModel):
    """Compile the unclamped schedule with its blocks in reverse order, for persistent chains.

    A sweep then ends with the block next to the data. The means its last draw
    came from are that block's conditional means given the final state, which
    the model term uses in place of the samples (Rao-Blackwellisation), so no
    extra product recomputes them.
    """
    blocks = [block.layers for block in reversed(model.schedule().blocks)]
    return compile_schedule(model, (), blocks=blocks)


def _batch_size(batch: State) -> int:
    return next(iter(batch.values())).shape[0]


ESTIMATORS = {"cd": CD, "pcd": PCD, "mf-pcd": MeanFieldPCD, "mf-cd": MeanFieldCD}


def make_estimator(name: str, **options: Any) -> GradientEstimator:
    """Build an estimator by name: ``"cd"``, ``"pcd"``, ``"mf-pcd"`` or ``"mf-cd"`` (the DRM recipe)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown training algorithm {name!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name](**options)
