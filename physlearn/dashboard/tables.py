"""Run tables: a sweep's runs (or the runs given) with status, committed steps, last metrics and
a link to each run's own page. Rows are read from the stores' attributes only (no records but
the last metrics of a running run), so a table of many runs stays cheap to refresh."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from physlearn.dashboard.targets import RunRef, Target, group_attrs, run_status, sweep_rows

if TYPE_CHECKING:
    from bokeh.models.sources import ColumnDataSource
    from bokeh.models.widgets import DataTable

#: Metrics a table shows, when the runs have them.
METRICS = ("loss", "test_loss", "test_accuracy")
#: What a row of a run table holds, in column order (the axes of a sweep come after ``run``).
BASE_COLUMNS = ("status", "steps", *METRICS)

#: The ``run`` cell: the run's name linking to its page (an underscore template, no script).
LINK_TEMPLATE = '<a href="<%= href %>"><%= value %></a>'


def run_row(ref: RunRef, table_row: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run's row: status and committed steps from its store's attributes; the last metrics
    from the sweep table once the run ended, else read from the store's last records."""
    attrs = group_attrs(ref.path)
    row: dict[str, Any] = {"run": ref.label, "href": "?run=" + quote(ref.key, safe="")}
    table_row = table_row or {}
    if attrs is None or "committed_steps" not in attrs:
        status = "fail" if table_row.get("status") == "fail" else "pending"
        return {**row, "status": status, "steps": "0", **dict.fromkeys(METRICS, "")}
    status = run_status(attrs)
    total = attrs.get("total_steps") or table_row.get("total_steps")
    steps = f"{int(attrs.get('committed_steps', 0))}" + (f" / {total}" if total else "")
    metrics = table_row.get("metrics") if table_row.get("status") == status else None
    if not isinstance(metrics, dict):
        metrics = _last_metrics(ref)
    values = {m: _fmt(metrics.get(m)) for m in METRICS}
    return {**row, "status": status, "steps": steps, **values}


def _last_metrics(ref: RunRef) -> dict[str, float]:
    """The last committed loss and evaluation metrics of a run (empty when unreadable)."""
    from physlearn.run.result import last_metrics
    from physlearn.store.run_store import RunStore, StoreError

    try:
        return last_metrics(RunStore.open(ref.path))
    except (StoreError, OSError, KeyError, ValueError):
        return {}


def _fmt(value: Any) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return ""
    return f"{value:.4g}"


def sweep_table_rows(target: Target) -> list[dict[str, Any]]:
    """Every row of a sweep's run table, its axis values and seed included."""
    rows = []
    for table_row in sweep_rows(target):
        run_id = str(table_row["run_id"])
        ref = RunRef(f"s{target.index}/{run_id}", target.path / run_id, run_id)
        row = run_row(ref, table_row)
        axes = table_row.get("axes") or {}
        for axis, value in axes.items():
            row[axis] = str(value)
        row["seed"] = "" if table_row.get("seed") is None else str(table_row["seed"])
        rows.append(row)
    return rows


def table_data(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, list[str]]:
    """Column-wise, HTML-escaped data for a table's source (the link's address kept as is)."""
    data = {c: [html.escape(str(r.get(c, ""))) for r in rows] for c in columns}
    data["href"] = [str(r.get("href", "")) for r in rows]
    return data


def run_table(rows: list[dict[str, Any]], columns: list[str]) -> tuple[DataTable, ColumnDataSource]:
    """A sortable table of runs; the ``run`` column links to each run's page."""
    from bokeh.models.sources import ColumnDataSource
    from bokeh.models.widgets import DataTable, HTMLTemplateFormatter, TableColumn

    source = ColumnDataSource(table_data(rows, columns))
    cols = [
        TableColumn(field=c, title=c, formatter=HTMLTemplateFormatter(template=LINK_TEMPLATE))
        if c == "run"
        else TableColumn(field=c, title=c)
        for c in columns
    ]
    table = DataTable(
        source=source,
        columns=cols,
        height=min(36 + 28 * max(len(rows), 1), 400),
        sizing_mode="stretch_width",
        index_position=None,
        selectable="checkbox",
    )
    return table, source


def sweep_columns(target: Target, rows: list[dict[str, Any]]) -> list[str]:
    """The columns of a sweep's table: run, its axes, seed, then status, steps, metrics."""
    axes = list(dict.fromkeys(a for r in sweep_rows(target) for a in (r.get("axes") or {})))
    seeds = ["seed"] if any(r.get("seed") for r in rows) else []
    return ["run", *axes, *seeds, *BASE_COLUMNS]
