"""Estimators of partition functions and likelihoods."""

from ebmgraph.estimators.exact import enumerate_states, enumeration_layers, log_marginal, log_partition

__all__ = ["enumerate_states", "enumeration_layers", "log_marginal", "log_partition"]
