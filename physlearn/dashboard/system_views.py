"""Views of one run's system: its parameters drawn on its graph, and for a station run the
instruments, the safety envelope and the bench's own counters (Bokeh models)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from physlearn.dashboard.feed import Graph, Params

if TYPE_CHECKING:
    from bokeh.models.annotations import ColorBar
    from bokeh.models.layouts import LayoutDOM
    from bokeh.models.mappers import LinearColorMapper, LogColorMapper
    from bokeh.models.renderers import GlyphRenderer
    from bokeh.models.sources import ColumnDataSource
    from bokeh.models.widgets import DataTable, Div


@dataclass
class GraphView:
    """The graph panel and what a poll updates in it: edge colours and the caption."""

    layout: LayoutDOM
    edges: ColumnDataSource
    mapper: LogColorMapper
    linear: LinearColorMapper
    bar: ColorBar
    caption: Div
    segments: GlyphRenderer

    def update(self, params: Params) -> None:
        """Colour the edges by the parameters of the last committed step."""
        values = np.asarray(params.values, dtype=np.float64)
        if values.shape != (len(self.edges.data["source"]),):
            return
        finite = values[np.isfinite(values)]
        positive = finite.size > 0 and bool(np.all(finite > 0))
        mapper: Any = self.mapper if positive else self.linear
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            mapper.low, mapper.high = (lo, hi) if hi > lo else (lo * 0.9 or -1.0, hi * 1.1 or 1.0)
        self.bar.color_mapper = mapper
        self.bar.title = f"{params.name} ({params.units})"
        self.edges.data = {**self.edges.data, "value": [float(v) for v in values]}
        self.segments.glyph.line_color = {"field": "value", "transform": mapper}
        self.caption.text = (
            f"<small>{html.escape(params.name)} held during step {params.step} "
            f"(the last committed), {values.size} edges; hover an edge for its value</small>"
        )


def graph_view(graph: Graph) -> GraphView:
    """The system's graph: nodes at the stored positions coloured by role, edges coloured by
    the last committed parameter value (log colour scale when all are positive)."""
    from bokeh.layouts import column
    from bokeh.models.annotations import ColorBar
    from bokeh.models.mappers import LinearColorMapper, LogColorMapper
    from bokeh.models.sources import ColumnDataSource
    from bokeh.models.tools import HoverTool
    from bokeh.models.widgets import Div
    from bokeh.palettes import Category10_10, Viridis256
    from bokeh.plotting import figure

    src, tgt = graph.edge_source, graph.edge_target
    edges = ColumnDataSource(
        {
            "x0": graph.node_x[src].tolist(),
            "y0": graph.node_y[src].tolist(),
            "x1": graph.node_x[tgt].tolist(),
            "y1": graph.node_y[tgt].tolist(),
            "edge": list(range(len(src))),
            "source": src.tolist(),
            "target": tgt.tolist(),
            "value": [float("nan")] * len(src),
        }
    )
    log = LogColorMapper(palette=Viridis256, nan_color="lightgray")
    linear = LinearColorMapper(palette=Viridis256, nan_color="lightgray")
    fig = figure(
        height=420,
        sizing_mode="stretch_width",
        tools="pan,wheel_zoom,box_zoom,reset,save",
        active_scroll="wheel_zoom",
    )
    fig.toolbar.logo = None
    fig.axis.visible = False
    fig.grid.visible = False
    seg = fig.segment(
        "x0",
        "y0",
        "x1",
        "y1",
        source=edges,
        line_width=2,
        alpha=0.8,
        line_color={"field": "value", "transform": log},
    )
    fig.add_tools(
        HoverTool(
            renderers=[seg],
            tooltips=[("edge", "@edge: @source → @target"), ("value", "@value{0.0000e}")],
            line_policy="interp",
        )
    )
    roles = sorted(set(graph.node_role))
    nodes = ColumnDataSource(
        {
            "x": graph.node_x.tolist(),
            "y": graph.node_y.tolist(),
            "node": list(range(len(graph.node_x))),
            "role": graph.node_role,
            "color": [Category10_10[roles.index(r) % 10] for r in graph.node_role],
        }
    )
    dots = fig.scatter(
        "x", "y", source=nodes, size=9, color="color", line_color="black", legend_field="role"
    )
    fig.add_tools(HoverTool(renderers=[dots], tooltips=[("node", "@node (@role)")]))
    fig.legend.location = "top_left"
    fig.legend.label_text_font_size = "9pt"
    bar = ColorBar(color_mapper=log, title="parameter", width=12)
    fig.add_layout(bar, "right")
    head = Div(text="<h3 style='margin:8px 0 0 0'>Parameters on the graph</h3>")
    caption = Div(text="<small>no step committed yet</small>")
    layout = column(head, caption, fig, sizing_mode="stretch_width")
    return GraphView(layout, edges, log, linear, bar, caption, seg)


def _table(rows: list[dict[str, Any]], columns: list[str], height: int) -> DataTable:
    from bokeh.models.sources import ColumnDataSource
    from bokeh.models.widgets import DataTable, TableColumn

    data = {c: [html.escape(str(r.get(c, ""))) for r in rows] for c in columns}
    return DataTable(
        source=ColumnDataSource(data),
        columns=[TableColumn(field=c, title=c) for c in columns],
        height=height,
        sizing_mode="stretch_width",
        index_position=None,
    )


def station_view(snapshot: dict[str, Any]) -> LayoutDOM | None:
    """The instruments (identity, driver, address) and the envelope of a station run, as the
    run recorded them when it started; None for a run that is not on a station."""
    from bokeh.layouts import column
    from bokeh.models.widgets import Div

    instruments = snapshot.get("instruments")
    envelope = snapshot.get("envelope")
    if not isinstance(instruments, dict) or not isinstance(envelope, dict):
        return None
    inst_rows = [{"instrument": k, **v} for k, v in instruments.items() if isinstance(v, dict)]
    env_rows = [{"role": k, **v} for k, v in envelope.items() if isinstance(v, dict)]
    env_cols = ["role", *dict.fromkeys(c for r in env_rows for c in r if c != "role")]
    weights = snapshot.get("weights") or {}
    kind = html.escape(str(weights.get("kind", "?"))) if isinstance(weights, dict) else "?"
    return column(
        Div(
            text="<h3 style='margin:8px 0 0 0'>Instruments</h3><small>identities and "
            f"addresses when the run started; weights: {kind}</small>"
        ),
        _table(inst_rows, ["instrument", "idn", "class", "address"], 30 + 28 * len(inst_rows)),
        Div(
            text="<h3 style='margin:8px 0 0 0'>Envelope</h3><small>the limits every driven "
            "level is held within (units per row)</small>"
        ),
        _table(env_rows, env_cols, 30 + 28 * len(env_rows)),
        sizing_mode="stretch_width",
    )


def counters_text(counters: dict[str, float]) -> str:
    """The bench's own counters at the last committed step, one line of HTML."""
    if not counters:
        return ""
    parts = [f"{html.escape(k.replace('_', ' '))}: {v:.4g}" for k, v in sorted(counters.items())]
    return "<b>Bench at the last committed step</b>: " + ", ".join(parts)
