"""Reading run and sweep stores as xarray datasets: :func:`open_run` (the committed records of
one run, with coordinates and units on everything) and :func:`open_sweep` (a sweep's runs
stacked along its axes). xarray (and dask, for lazy reading) are imported when called."""

from physlearn.read.run import open_run
from physlearn.read.sweep import open_sweep

__all__ = ["open_run", "open_sweep"]
