"""The C allocator's policy for a process that runs campaigns.

A simulator step allocates and frees arrays of megabytes (a 10 000-node resistor network's batch
of 64 makes about 10 MB of conjugates per phase). glibc's malloc returns freed memory at the top
of its heap to the kernel once more than ``M_TRIM_THRESHOLD`` is free there (about twice the
largest block seen, or 64 KiB in a Dask worker, whose nanny sets ``MALLOC_TRIM_THRESHOLD_``).
The next step then gets fresh pages from the kernel: one page fault and one zeroing per 4 KiB,
thousands per step, several per cent of the step's time and memory bandwidth.

:func:`retain_freed_memory` raises the trim threshold and fixes the mmap threshold at glibc's
maximum (32 MiB), so blocks up to that size come from the heap and freed ones are reused by the
next step while still mapped. The process keeps its peak heap (it does not grow beyond the peak
a step needs); a long campaign's resident size is that peak.

The setting is process-wide (the allocator has no other scope) and cannot be undone, so it is
opt-in: ``physlearn run``, ``resume`` and ``sweep --retain-freed-memory`` (``retain_freed_memory=
True`` in :func:`physlearn.run.start.start_run`, ``resume_run`` and
:func:`physlearn.sweep.execute.run_sweep`) apply it before driving a campaign, in the worker of a
sweep run too; benchmarks apply it before measuring either side. On a C library without
``mallopt`` (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

#: glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD = 32 << 20
#: Free memory kept at the top of the heap before any is returned to the kernel.
TRIM_THRESHOLD = 1 << 30


def retain_freed_memory() -> bool:
    """Keep freed heap memory mapped for reuse (see the module docstring). Returns whether the
    C library accepted the setting; idempotent."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
