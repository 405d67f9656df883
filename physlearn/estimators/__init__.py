"""Gradient estimators: equilibrium propagation and its relatives, plus black-box baselines."""

from physlearn.estimators.base import Estimate, Estimator, Phase, measure, measure_many
from physlearn.estimators.blackbox import SPSA, FiniteDifference
from physlearn.estimators.coupled import CoupledLearning
from physlearn.estimators.ep import (
    EquilibriumPropagation,
    central_stencil,
    centred,
    holomorphic,
    one_sided,
)
from physlearn.estimators.thermal import ThermalCovariance

__all__ = [
    "SPSA",
    "CoupledLearning",
    "Estimate",
    "Estimator",
    "EquilibriumPropagation",
    "FiniteDifference",
    "Phase",
    "ThermalCovariance",
    "central_stencil",
    "centred",
    "holomorphic",
    "measure",
    "measure_many",
    "one_sided",
]
