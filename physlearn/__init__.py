"""physlearn: train physical learning machines with equilibrium propagation.

The contract every machine implements is :class:`physlearn.system.PhysicalSystem`; a run is
driven by :mod:`physlearn.run` and logged to a Zarr v3 group (:mod:`physlearn.store`); many runs
are a sweep (:mod:`physlearn.sweep`); :mod:`physlearn.report` draws them.
:func:`physlearn.open_run` and :func:`physlearn.open_sweep` (:mod:`physlearn.read`) read them as
xarray datasets; they are imported on first use, so ``import physlearn`` stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from physlearn.read import open_run, open_sweep

try:
    __version__ = version("physlearn")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = ["__version__", "open_run", "open_sweep"]


def __getattr__(name: str) -> Any:
    """``open_run`` and ``open_sweep``, imported from :mod:`physlearn.read` when first asked
    for (PEP 562)."""
    if name in ("open_run", "open_sweep"):
        from physlearn import read

        return getattr(read, name)
    raise AttributeError(f"module 'physlearn' has no attribute {name!r}")
