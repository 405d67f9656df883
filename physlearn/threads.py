"""Temporary limits on BLAS threads around a simulator's linear algebra.

SuperLU's supernodal kernels and small dense solves call BLAS on tiny blocks; a multi-threaded
OpenBLAS turns these into thread hand-offs that are pure overhead (see
:mod:`physlearn.simulators.resistor.linear`). :class:`BlasThreads` sets the loaded BLAS libraries to
``n`` threads for the duration of a ``with`` block and restores them afterwards. The limit is
process-wide while it holds (BLAS has no per-thread setting).

threadpoolctl finds the libraries once, on first use. Entering a block then costs about a
microsecond, because a library already at ``n`` threads is left alone. ``threadpoolctl``'s own
``limit()`` re-inspects every library on every call, costing tens of microseconds per equilibrate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class BlasThreads:
    """``with blas.limit(): ...`` runs the block with at most ``n`` BLAS threads (``n`` None:
    no limit)."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self._libs: list[Any] | None = None

    def _controllers(self) -> list[Any]:
        if self._libs is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # pragma: no cover - threadpoolctl is a dependency
                self._libs = []
            else:
                libs = ThreadpoolController().lib_controllers
                self._libs = [c for c in libs if c.user_api == "blas"]
        return self._libs

    @contextmanager
    def limit(self) -> Iterator[None]:
        n = self.n
        if n is None:
            yield
            return
        changed = []
        for lib in self._controllers():
            old = lib.num_threads
            if old != n:
                lib.set_num_threads(n)
                changed.append((lib, old))
        try:
            yield
        finally:
            for lib, old in reversed(changed):
                lib.set_num_threads(old)
