"""The HTML page of a report: figures embedded as ``data:`` URIs beside their PNG files, tables,
and the page itself (see :mod:`physlearn.report.command`)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_NAMES = (
    "training.png",
    "gradient_fidelity.png",
    "parameters.png",
    "graph.png",
    "equilibrium.png",
    "timing.png",
    "instruments.png",
    "sweep_axes.png",
    "sweep_curves.png",
)
HTML_NAME = "report.html"


@dataclass
class Report:
    """What :func:`make_report` wrote."""

    kind: str  # "run" or "sweep"
    out_dir: Path
    html: Path
    figures: list[Path]
    table: str = ""  # sweeps: the per-configuration table as text


@dataclass
class PageFigure:
    file: str
    caption: str
    png: bytes


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}figure{margin:1em 0}img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}pre{background:#f8f8f8;padding:.8em;overflow:auto}
"""


def esc(text: Any) -> str:
    return html.escape(str(text))


def number_text(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else "n/a"


def yaml_text(obj: Any) -> str:
    import yaml

    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=None))


def kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


@dataclass(frozen=True)
class Link:
    """A table cell that links ``text`` to ``href`` (a path relative to the page)."""

    text: str
    href: str

    def html(self) -> str:
        return f'<a href="{esc(self.href)}">{esc(self.text)}</a>'


def html_table(head: Sequence[str], rows: Sequence[Sequence[str | Link]]) -> str:
    """A table; cells are text (escaped) or :class:`Link`."""
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    b = "".join(
        "<tr>"
        + "".join(f"<td>{c.html() if isinstance(c, Link) else esc(c)}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def add_figure(figs: list[PageFigure], file: str, fig: Figure | None, caption: str) -> None:
    if fig is None:
        return
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    figs.append(PageFigure(file, caption, buf.getvalue()))


def figure_html(f: PageFigure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (
        f'<figure id="{esc(f.file.removesuffix(".png"))}">'
        f'<img src="data:image/png;base64,{data}" alt="{esc(f.file)}">'
        f'<figcaption>{esc(f.caption)} <a href="{esc(f.file)}">{esc(f.file)}</a></figcaption>'
        "</figure>"
    )


def write_page(
    out_dir: Path, kind: str, title: str, body: Sequence[str], figs: list[PageFigure]
) -> Report:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {f.file for f in figs}
    for stale in FIGURE_NAMES:  # figures of an earlier report that no longer apply
        if stale not in written and (out_dir / stale).is_file():
            (out_dir / stale).unlink()
    paths = []
    for f in figs:
        p = out_dir / f.file
        p.write_bytes(f.png)
        paths.append(p)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
    html_path = out_dir / HTML_NAME
    html_path.write_text(page, encoding="utf-8")
    return Report(kind, out_dir, html_path, paths)
