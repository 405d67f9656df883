"""physlearn: train physical learning machines with equilibrium propagation.

The contract every machine implements is :class:`physlearn.system.PhysicalSystem`; a run is
driven by :mod:`physlearn.run` and logged to a Zarr v3 group (:mod:`physlearn.store`); many runs
are a sweep (:mod:`physlearn.sweep`); :mod:`physlearn.report` draws them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("physlearn")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = ["__version__"]
