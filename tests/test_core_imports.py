"""The core's import graph: the losses build on nothing of physlearn but the shared array types,
so the contract (:mod:`physlearn.system`) imports them without a cycle."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT


def _physlearn_modules_after(statement: str) -> list[str]:
    code = (
        f"import sys; {statement}; import json; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('physlearn'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def test_losses_import_nothing_of_the_contract() -> None:
    """``losses`` <-> ``system`` was a cycle hidden by a lazy import; now one direction only."""
    loaded = _physlearn_modules_after("import physlearn.losses")
    assert loaded == ["physlearn", "physlearn.arrays", "physlearn.losses"]
