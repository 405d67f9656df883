"""The allocator policy of a campaign process: freed step-sized blocks are reused, not faulted
in again."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from physlearn.memory import retain_freed_memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt only")


def _faults_of_alloc_cycles(nbytes: int, cycles: int) -> int:
    """Minor page faults while allocating, touching and freeing two blocks ``cycles`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        a = np.empty(nbytes // 8)
        a[:] = 1.0
        b = np.empty(nbytes // 8)
        b[:] = 2.0
        del a, b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@linux
def test_freed_blocks_are_reused_without_page_faults() -> None:
    assert retain_freed_memory()
    assert retain_freed_memory()  # idempotent
    nbytes = 16 << 20  # a 10 000-node step's arrays are of this order
    _faults_of_alloc_cycles(nbytes, 1)  # the heap grows once
    pages = 2 * 5 * nbytes // 4096
    faults = _faults_of_alloc_cycles(nbytes, 5)
    # without the setting every cycle faults in every page again (about `pages` faults)
    assert faults < pages // 100, f"{faults} page faults for {pages} pages reused"
