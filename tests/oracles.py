"""Brute-force oracles in NumPy, independent of the engine: every joint state of a small model.

The energy is computed straight from the definition
``E(s) = -sum_l b_l . s_l - sum_(l, m) s_l^T W_lm s_m`` over discrete layers
(Bernoulli {0, 1}, spin {-1, +1}, softmax one-hot), reading only the model's
parameters, so these tables check the engine rather than repeat it.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.special import logsumexp

_VALUES = {"bernoulli": (0.0, 1.0), "spin": (-1.0, 1.0)}


def layer_states(family: str, size: int) -> np.ndarray:
    """All states of one layer, first unit most significant."""
    if family == "softmax":
        return np.eye(size)
    return np.array(list(itertools.product(_VALUES[family], repeat=size)), dtype=np.float64).reshape(-1, size)


class JointTable:
    """Every joint state of a discrete model with its energy and probability.

    Attributes
    ----------
    names : list of str
        Layer names in declaration order.
    states : dict of str to ndarray, each ``(n_joint, size)``
    energy : ndarray ``(n_joint,)``
    log_z : float
    log_p : ndarray ``(n_joint,)``
    """

    def __init__(self, model):
        graph = model.graph
        self.names = list(graph.layer_names)
        per_layer = [layer_states(graph[name].units.name, graph[name].size) for name in self.names]
        index = np.array(list(itertools.product(*[range(len(s)) for s in per_layer])))
        self.states = {name: s[index[:, i]] for i, (name, s) in enumerate(zip(self.names, per_layer))}

        biases = {name: model.biases[name].detach().double().cpu().numpy() for name in self.names}
        energy = np.zeros(len(index))
        for name in self.names:
            energy -= self.states[name] @ biases[name]
        for a, b in graph.edges:
            weight = model.weights[f"{a}-{b}"].detach().double().cpu().numpy()
            energy -= np.einsum("ni,ij,nj->n", self.states[a], weight, self.states[b])
        self.energy = energy
        self.log_z = float(logsumexp(-energy))
        self.log_p = -energy - self.log_z

    def joint_index(self, names: list[str]) -> np.ndarray:
        """One integer code per joint state for the layers ``names`` (for marginals and histograms)."""
        columns = np.concatenate([self.states[name] for name in names], axis=1)
        _, codes = np.unique(columns, axis=0, return_inverse=True)
        return codes.reshape(-1)

    def marginal(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Distinct joint states of ``names`` (rows) and their probabilities."""
        columns = np.concatenate([self.states[name] for name in names], axis=1)
        unique, codes = np.unique(columns, axis=0, return_inverse=True)
        probs = np.zeros(len(unique))
        np.add.at(probs, codes.reshape(-1), np.exp(self.log_p))
        return unique, probs

    def conditional_mean(self, target: str, given: dict[str, np.ndarray]) -> np.ndarray:
        """``E[s_target | given]`` for one configuration of the given layers (1-D arrays)."""
        mask = np.ones(len(self.energy), dtype=bool)
        for name, value in given.items():
            mask &= np.all(self.states[name] == value, axis=1)
        weights = np.exp(self.log_p[mask] - self.log_p[mask].max())
        return (weights[:, None] * self.states[target][mask]).sum(axis=0) / weights.sum()

    def free_energy(self, kept: dict[str, np.ndarray]) -> float:
        """``-log sum exp(-E)`` over every layer not in ``kept`` (1-D arrays)."""
        mask = np.ones(len(self.energy), dtype=bool)
        for name, value in kept.items():
            mask &= np.all(self.states[name] == value, axis=1)
        return float(-logsumexp(-self.energy[mask]))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())
