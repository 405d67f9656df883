"""Checks of the carried state (``export_state``/``import_state`` resume bit-identically)
and of the lifecycle (``safe_state`` on every exit of a ``with`` block)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from physlearn.testing.probes import (
    Factory,
    KitOptions,
    compare_records,
    kit_inputs,
    kit_rng,
    moved_parameters,
    relax,
)


def check_carried_state(factory: Factory, opts: KitOptions) -> None:
    """``export_state`` gives the declared arrays, and ``import_state(export_state(s))`` gives
    bit-identical records in the same system as in a fresh one from the factory (a resumed run),
    after the parameters moved by one update as in training."""
    with factory() as a:
        x = kit_inputs(a, opts)
        free = relax(a, x, opts)
        moved = a.set_parameters(moved_parameters(a, a.get_parameters(), 0.01, kit_rng(opts, 6)))
        arrays = a.export_state(free.state)
        shapes = a.carried_shapes(opts.batch)
        if arrays is not None:
            assert set(arrays) == set(shapes), (
                f"export_state gave {sorted(arrays)}, carried_shapes declares {sorted(shapes)}"
            )
            for k, v in arrays.items():
                assert np.asarray(v).shape == shapes[k], f"carried {k!r} shape {np.shape(v)}"
                assert np.asarray(v).dtype == np.float64, f"carried {k!r} is not float64"
        stored = None if arrays is None else {k: np.array(v) for k, v in arrays.items()}
        warm = None if arrays is None else a.import_state(arrays)
        here = relax(a, x, opts, warm=warm)
    with factory() as b:
        b.set_parameters(moved)
        warm_b = None if stored is None else b.import_state(stored)
        resumed = relax(b, x, opts, warm=warm_b)
    compare_records("same system vs a fresh one after import_state", resumed, here, 0.0)


class _Failed(Exception):
    """The error a lifecycle check raises inside a ``with`` block."""


def check_lifecycle(factory: Factory, opts: KitOptions) -> None:
    """Leaving the ``with`` block -- normally, by an exception of the caller, or by an error of
    the system itself -- calls ``safe_state`` and lets the exception through; ``safe_state`` and
    ``close`` may be called again on a closed system."""
    for how in ("normal", "exception", "system error"):
        s = factory()
        calls: list[int] = []
        original = s.safe_state

        def counted(original: Callable[[], None] = original, calls: list[int] = calls) -> None:
            calls.append(1)
            original()

        setattr(s, "safe_state", counted)  # noqa: B010 - the instance's own hook, observed
        raised: BaseException | None = None
        try:
            with s:
                x = kit_inputs(s, opts)
                relax(s, x, opts)
                if how == "exception":
                    raise _Failed("raised by the kit inside the with block")
                if how == "system error":
                    relax(s, np.full_like(x, np.nan), opts)
        except Exception as exc:  # noqa: BLE001 - whatever left the block is inspected
            raised = exc
        if how == "exception":
            assert isinstance(raised, _Failed), f"the block's exception became {raised!r}"
        elif how == "system error":
            assert isinstance(raised, ValueError), f"NaN inputs raised {raised!r}, not ValueError"
        else:
            assert raised is None, f"a normal block raised {raised!r}"
        assert calls, f"leaving the with block ({how}) did not call safe_state"
        s.safe_state()
        s.close()
