"""physlearn: train physical learning machines with equilibrium propagation.

The contract every machine implements is :class:`physlearn.system.PhysicalSystem`; the campaign
loop is :mod:`physlearn.orchestrator`; runs are Zarr v3 groups (:mod:`physlearn.store`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("physlearn")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = ["__version__"]
