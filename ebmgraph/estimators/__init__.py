"""Estimators of partition functions and likelihoods."""

from ebmgraph.estimators.ais import AISResult, ais_log_partition, default_betas, fit_base_biases
from ebmgraph.estimators.exact import enumerate_states, enumeration_layers, log_marginal, log_partition
from ebmgraph.estimators.likelihood import (
    LogLikelihoodEstimate,
    estimate_log_likelihood,
    free_energy_is_exact,
    unnormalised_log_marginal,
    variational_lower_bound,
)

__all__ = [
    "AISResult",
    "LogLikelihoodEstimate",
    "ais_log_partition",
    "default_betas",
    "enumerate_states",
    "enumeration_layers",
    "estimate_log_likelihood",
    "fit_base_biases",
    "free_energy_is_exact",
    "log_marginal",
    "log_partition",
    "unnormalised_log_marginal",
    "variational_lower_bound",
]
