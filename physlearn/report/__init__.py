"""Reports of run and sweep stores: ``physlearn report`` (:mod:`~physlearn.report.command`), the
run report (:mod:`~physlearn.report.run_report`), the sweep report
(:mod:`~physlearn.report.sweep_report`), the HTML page (:mod:`~physlearn.report.page`) and the
figures, drawn with matplotlib imported lazily (:mod:`~physlearn.report.figures`). See the
README's section on reports.
"""
