"""ebmgraph: energy-based models over declared graphs of layers, for PyTorch."""

from ebmgraph.chains import PersistentChains
from ebmgraph.graph import Graph, GraphError, Layer
from ebmgraph.model import Conditional, EnergyModel
from ebmgraph.presets import DeepRelationalModel, dbm, drm, rbm
from ebmgraph.schedule import Block, Schedule, compile_schedule
from ebmgraph.units import (
    Bernoulli,
    Gaussian,
    Softmax,
    Spin,
    UnitFamily,
    get_unit_family,
    register_unit_family,
    unit_family_names,
)

from ebmgraph import estimators, learning  # noqa: E402  (subpackages, after the names they use)

__version__ = "0.1.0"

__all__ = [
    "Bernoulli",
    "Block",
    "Conditional",
    "DeepRelationalModel",
    "EnergyModel",
    "Gaussian",
    "Graph",
    "GraphError",
    "Layer",
    "PersistentChains",
    "Schedule",
    "Softmax",
    "Spin",
    "UnitFamily",
    "compile_schedule",
    "estimators",
    "learning",
    "dbm",
    "drm",
    "get_unit_family",
    "rbm",
    "register_unit_family",
    "unit_family_names",
]
