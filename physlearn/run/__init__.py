"""One run: the campaign loop (:mod:`~physlearn.run.campaign`: clamp, relax, measure, estimate,
update, project, write back, log), the per-step records and their buffered writer
(:mod:`~physlearn.run.records`), starting and resuming a run against its store
(:mod:`~physlearn.run.start`) and what a run ends with (:mod:`~physlearn.run.result`). See the
README's "The run store" for what a run guarantees.
"""
