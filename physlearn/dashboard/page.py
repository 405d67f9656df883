"""One browser session's page: built when the browser opens it, refreshed by a periodic callback.

The address picks the page: ``/?run=KEY`` is one run's page (every panel, its graph, its
instruments); ``/`` is that page when a single run was given, else the overview (run tables of
the sweeps and runs given, and the panels with the chosen runs overlaid). Every ``interval``
seconds the page reads, in a worker thread, the rows committed since its last read
(:class:`~physlearn.dashboard.feed.RunFeed`) and appends them; a read that is still going when
the next is due is not started twice.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from physlearn.dashboard import panels, tables
from physlearn.dashboard.feed import (
    RunFeed,
    RunUpdate,
    eval_metric_names,
    read_graph,
    recorded_columns,
)
from physlearn.dashboard.system_views import GraphView, counters_text, graph_view, station_view
from physlearn.dashboard.targets import RunRef, Target, all_runs, resolve

if TYPE_CHECKING:
    from bokeh.document import Document
    from bokeh.models.sources import ColumnDataSource
    from bokeh.models.widgets import Div, MultiChoice

#: Runs of a sweep drawn when its overview opens (more are chosen in the table or the list).
FIRST_SHOWN = 8


@dataclass
class Table:
    """A run table on the overview and how to read its rows again."""

    target: Target | None  # None: the table of the runs given
    columns: list[str]
    source: ColumnDataSource
    refs: list[RunRef]


@dataclass
class Page:
    """The models of one session's page and the feeds that fill them."""

    doc: Document
    targets: list[Target]
    refs: list[RunRef]
    title: str
    header: Div
    status: Div
    sources: dict[str, panels.RunSources] = field(default_factory=dict)
    feeds: dict[str, RunFeed] = field(default_factory=dict)
    shown: set[str] = field(default_factory=set)
    tables: list[Table] = field(default_factory=list)
    graph: GraphView | None = None
    counters: Div | None = None
    busy: bool = False

    async def refresh(self) -> None:
        """Read what was committed since the last refresh (in a thread) and show it."""
        if self.busy:
            return
        self.busy = True
        try:
            updates, rows = await asyncio.to_thread(self._read)
            self._apply(updates, rows)
        finally:
            self.busy = False

    def _read(self) -> tuple[dict[str, RunUpdate | str], list[list[dict[str, Any]]]]:
        from physlearn.store.run_store import StoreError

        updates: dict[str, RunUpdate | str] = {}
        for key in sorted(self.shown):
            try:
                updates[key] = self.feeds[key].poll()
            except (StoreError, OSError, KeyError, ValueError) as exc:
                updates[key] = str(exc)
        rows = [_table_rows(t) for t in self.tables]
        return updates, rows

    def _apply(self, updates: dict[str, RunUpdate | str], rows: list[list[dict[str, Any]]]) -> None:
        problems = []
        for key, up in updates.items():
            if isinstance(up, str):
                problems.append(html.escape(up))
                continue
            panels.stream_rows(self.sources[key], up.steps, up.evals)
            if self.graph is not None and up.params is not None:
                self.graph.update(up.params)
            if self.counters is not None:
                self.counters.text = counters_text(up.counters)
            if len(self.refs) == 1:
                self.status.text = _progress_html(up)
                self.doc.title = f"{self.title}: {up.progress}"
        for table, table_rows in zip(self.tables, rows, strict=True):
            table.source.data = tables.table_data(table_rows, table.columns)
        if problems:
            self.status.text = "<b>cannot read:</b> " + "<br>".join(problems)
        elif len(self.refs) != 1:
            self.status.text = ""  # the overview's run tables say how each run stands

    def show(self, keys: list[str]) -> None:
        """Draw the runs ``keys`` (their feeds start reading), hide the others."""
        self.shown = {k for k in keys if k in self.sources}
        for key, src in self.sources.items():
            src.set_visible(key in self.shown)


def _table_rows(table: Table) -> list[dict[str, Any]]:
    if table.target is not None:
        return tables.sweep_table_rows(table.target)
    return [tables.run_row(ref) for ref in table.refs]


def _progress_html(up: RunUpdate) -> str:
    last = ", ".join(f"{k} {v:.4g}" for k, v in up.last.items())
    return (
        f"<span class='progress' style='font-size:1.2em'><b>{html.escape(up.progress)}</b></span>"
        + (f" &middot; last: {html.escape(last)}" if last else "")
    )


def build(doc: Document, targets: list[Target], interval: float) -> None:
    """Fill ``doc`` with the page its address asks for and start its periodic refresh."""
    from bokeh.models.widgets import Div

    request = getattr(doc.session_context, "request", None)
    args = request.arguments if request is not None else {}
    key = (args.get("run") or [b""])[0].decode("utf-8", "replace")
    ref = resolve(targets, key) if key else None
    if key and ref is None:
        doc.add_root(Div(text=f"<h2>No run {html.escape(key)!s} here</h2><a href='/'>overview</a>"))
        return
    if ref is None and len(targets) == 1 and targets[0].kind == "run":
        ref = resolve(targets, "0")
    page = run_page(doc, targets, ref) if ref is not None else overview(doc, targets)
    doc.add_next_tick_callback(_locked(page.refresh))
    doc.add_periodic_callback(_locked(page.refresh), int(interval * 1000))


def run_page(doc: Document, targets: list[Target], ref: RunRef) -> Page:
    """One run: every panel, the parameters on its graph, a station's instruments."""
    from bokeh.layouts import column
    from bokeh.models.widgets import Div

    from physlearn.read.run import open_run

    ds = open_run(ref.path)
    cfg = ds.attrs.get("config") or {}
    system = (cfg.get("system") or {}).get("kind", "?")
    back = "" if len(targets) == 1 and targets[0].kind == "run" else "<a href='/'>overview</a> · "
    header = Div(
        text=f"{back}<h2 style='margin:4px 0'>{html.escape(ref.label)}</h2>"
        f"<small>{html.escape(str(ref.path))} &middot; {html.escape(str(cfg.get('name', '')))} "
        f"on a {html.escape(str(system))} system</small>",
        sizing_mode="stretch_width",
    )
    page = Page(doc, targets, [ref], ref.label, header, Div(text="reading the run..."))
    metrics = eval_metric_names(ds)
    page.sources[ref.key] = panels.run_sources(ref.key, ref.label, 0, metrics)
    page.feeds[ref.key] = RunFeed(ref.path)
    snapshot = ds.attrs.get("system_snapshot") or {}
    station = station_view(snapshot) if isinstance(snapshot, dict) else None
    parts: list[Any] = [header, page.status]
    if station is not None:
        page.counters = Div(text="", sizing_mode="stretch_width")
        parts.append(page.counters)
    specs = panels.specs(metrics, bench=station is not None)
    runs = list(page.sources.values())
    parts.append(panels.grid(panels.step_panels(runs, specs, recorded_columns(ds))))
    graph = read_graph(ds)
    if graph is not None:
        page.graph = graph_view(graph)
        parts.append(page.graph.layout)
    if station is not None:
        parts.append(station)
    page.show([ref.key])
    doc.title = f"{ref.label} — physlearn dashboard"
    doc.add_root(column(*parts, sizing_mode="stretch_width", margin=(4, 16, 16, 16)))
    return page


def overview(doc: Document, targets: list[Target]) -> Page:
    """Run tables of the sweeps and runs given, and the chosen runs' lines overlaid."""
    from bokeh.layouts import column
    from bokeh.models.widgets import Div, MultiChoice

    refs = all_runs(targets)
    names = ", ".join(t.label for t in targets)
    header = Div(text=f"<h2 style='margin:4px 0'>physlearn dashboard: {html.escape(names)}</h2>")
    page = Page(doc, targets, refs, "physlearn dashboard", header, Div(text=""))
    parts: list[Any] = [header, page.status]
    given = [r for r in refs if not r.key.startswith("s")]
    if len(given) > 1:
        parts.extend(_add_table(page, None, "Runs", given))
    for t in targets:
        if t.kind == "sweep":
            mine = [r for r in refs if r.key.startswith(f"s{t.index}/")]
            parts.extend(_add_table(page, t, f"Sweep {t.label}", mine))
    metrics, bench = _metrics_of(refs)
    for i, ref in enumerate(refs):
        page.sources[ref.key] = panels.run_sources(ref.key, ref.label, i, metrics)
        page.feeds[ref.key] = RunFeed(ref.path)
    first = given + [r for r in refs if r not in given][: max(0, FIRST_SHOWN - len(given))]
    chooser = MultiChoice(
        title="Runs drawn (overlay): choose here or tick rows of a table",
        options=[(r.key, r.label) for r in refs],
        value=[r.key for r in first],
        sizing_mode="stretch_width",
    )

    def chosen(_attr: str, _old: list[str], new: list[str]) -> None:
        page.show(new)
        page.doc.add_next_tick_callback(_locked(page.refresh))

    chooser.on_change("value", chosen)
    for table in page.tables:
        table.source.selected.on_change("indices", _ticker(chooser, table))
    parts.append(chooser)
    specs = panels.specs(metrics, bench)
    parts.append(panels.grid(panels.step_panels(list(page.sources.values()), specs)))
    page.show(chooser.value)
    doc.title = f"{names} — physlearn dashboard"
    doc.add_root(column(*parts, sizing_mode="stretch_width", margin=(4, 16, 16, 16)))
    return page


def _add_table(page: Page, target: Target | None, title: str, refs: list[RunRef]) -> list[Any]:
    from bokeh.models.widgets import Div

    if target is not None:
        rows = tables.sweep_table_rows(target)
        columns = tables.sweep_columns(target, rows)
    else:
        rows = [tables.run_row(r) for r in refs]
        columns = ["run", *tables.BASE_COLUMNS]
    table, source = tables.run_table(rows, columns)
    page.tables.append(Table(target, columns, source, refs))
    head = Div(
        text=f"<h3 style='margin:8px 0 0 0'>{html.escape(title)}</h3>"
        "<small>a run's name opens its page; ticked rows are drawn below</small>"
    )
    return [head, table]


def _metrics_of(refs: list[RunRef]) -> tuple[list[str], bool]:
    """Evaluation metrics of the first readable run (runs of one campaign share their task),
    and whether it runs on a bench (it records the instruments' counters)."""
    from physlearn.read.run import open_run
    from physlearn.store.run_store import StoreError

    for ref in refs:
        try:
            ds = open_run(ref.path)
        except (StoreError, OSError):
            continue
        return eval_metric_names(ds), "system_instrument_time" in ds.data_vars
    return ["test_loss", "test_accuracy"], False


def _ticker(chooser: MultiChoice, table: Table) -> Callable[[str, list[int], list[int]], None]:
    """Ticking rows of a table draws those runs (besides the runs of other tables chosen)."""

    def ticked(_attr: str, _old: list[int], indices: list[int]) -> None:
        keys = [table.refs[i].key for i in indices if i < len(table.refs)]
        mine = {r.key for r in table.refs}
        chooser.value = [k for k in chooser.value if k not in mine] + keys

    return ticked


def _locked(refresh: Callable[[], Any]) -> Callable[[], None]:
    """A coroutine as a document callback: Bokeh runs coroutine callbacks (with the document
    lock held), though its annotations name plain functions only."""
    return cast(Callable[[], None], refresh)
