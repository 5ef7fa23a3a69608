"""Learning: sufficient statistics, gradient estimators and the trainer."""

from ebmgraph.learning.algorithms import CD, PCD, ESTIMATORS, GradientEstimator, MeanFieldCD, MeanFieldPCD, make_estimator
from ebmgraph.learning.statistics import ascend_log_likelihood_, block_means, log_likelihood_gradient, sufficient_statistics
from ebmgraph.learning.trainer import DivergenceError, Trainer, TrainingConfig, iterate_batches

__all__ = [
    "CD",
    "ESTIMATORS",
    "PCD",
    "DivergenceError",
    "GradientEstimator",
    "MeanFieldCD",
    "MeanFieldPCD",
    "Trainer",
    "TrainingConfig",
    "block_means",
    "iterate_batches",
    "log_likelihood_gradient",
    "ascend_log_likelihood_",
    "make_estimator",
    "sufficient_statistics",
]
