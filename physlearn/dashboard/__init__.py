"""``physlearn dashboard PATH...``: a live web page of runs and sweeps for the people at the bench.

A Bokeh server (the scientific Python stack's interactive plotting; no hand-written JavaScript)
on 127.0.0.1 whose pages poll the stores with :func:`physlearn.open_run` and append the steps
committed since the last poll: loss and metrics, gradient fidelity (1 - cos, log axis), step time
and throughput, equilibrium diagnostics, the parameters drawn on the system's graph, a station's
instruments and envelope, and a sweep's run table with a link to each run's own page.

Modules: :mod:`.targets` (what a path is, which runs a page may show), :mod:`.feed` (the rows
a page has not shown yet; numpy and xarray), :mod:`.panels` (the step figures),
:mod:`.system_views` (the graph, a station's instruments), :mod:`.tables` (run tables),
:mod:`.page` (a browser session's document), :mod:`.server` (the HTTP server), :mod:`.cli`
(the command). Bokeh is imported only when the server starts, never by ``import physlearn``.
"""
