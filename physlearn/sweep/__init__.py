"""Sweeps: many runs over config axes. The sweep file (:mod:`~physlearn.sweep.spec`), its
expansion into validated, named runs (:mod:`~physlearn.sweep.expand`), the sweep store and the
plan of what each run needs (:mod:`~physlearn.sweep.plan`), execution in this process or on Dask
(:mod:`~physlearn.sweep.execute`) and ``physlearn sweep`` (:mod:`~physlearn.sweep.command`).
See the README's section on sweeps.
"""
