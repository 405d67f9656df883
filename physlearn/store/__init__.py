"""The run store: one Zarr v3 group per run (:mod:`~physlearn.store.run_store`), built so that it
appears complete or not at all (:mod:`~physlearn.store.build`), written by one process at a time
(:mod:`~physlearn.store.lock`, also used by sweep stores) and checked against per-commit
checksums (:mod:`~physlearn.store.integrity`). See the README's "The run store" and
"Guarantees".
"""
