"""The array types shared by the contract (:mod:`physlearn.system`) and the modules it builds on
(:mod:`physlearn.losses`): one place, so that neither imports the other for a type alias."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
