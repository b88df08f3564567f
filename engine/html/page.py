"""The page: one self-contained HTML file (styles, the Vega runtime, the chart specs and their tables inline).

Nothing is fetched when it opens: the runtime (Vega, Vega-Lite and vega-embed, bundled by vl-convert) is
inlined once, each chart's spec sits in a JSON script element and is drawn as SVG. Each chart has its
table in a ``<details>`` element, opened before printing; the page reads in black and white.
"""

from __future__ import annotations

import html
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
import polars as pl

from engine.errors import OptionsError
from engine.html.charts import Figure

__all__ = ["Glance", "Section", "render_page", "table_html", "vega_runtime"]

logger = logging.getLogger(__name__)

MAX_TABLE_ROWS = 500
COLLAPSE_ROWS = 25


@dataclass(frozen=True, kw_only=True)
class Glance:
    """One line of the summary at the top: a question, its answer, and whether to look closer."""

    question: str
    status: str  # "ok", "check" or "n/a": shown as words and symbols, not only colour
    answer: str
    anchor: str


@dataclass(kw_only=True)
class Section:
    """A titled part of the page: a paragraph, figures (chart + table) and further tables."""

    key: str
    title: str
    intro: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, pl.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def vega_runtime() -> str:
    """Vega, Vega-Lite and vega-embed as one script, cached per vl-convert version (bundling takes seconds)."""
    try:
        import vl_convert as vlc
    except ImportError:
        raise OptionsError(
            "the HTML report needs altair and vl-convert-python: pip install 'capture-engine[report]'"
        ) from None
    version = getattr(vlc, "__version__", "unknown")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "capture-engine"
    path = cache / f"vega-runtime-{version}.js"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        pass
    bundle: str = vlc.javascript_bundle()  # type: ignore[call-arg]  # the default snippet: globals
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache, delete=False, encoding="utf-8", suffix=".tmp") as f:
            f.write(bundle)
        os.replace(f.name, path)  # whole or absent, even with reports written side by side
    except OSError as exc:
        logger.debug("cannot cache the Vega runtime in %s: %s", cache, exc)
    return bundle


def _cell(value: object, column: str) -> tuple[str, bool]:
    """A value as text, and whether it is a number (right-aligned)."""
    if value is None:
        return "\u2013", False
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, int):
        return f"{value:,}", True
    if isinstance(value, float):
        if value != value:
            return "NaN", True
        if column in ("share", "coverage", "reject_ratio") or column.startswith(("null_share", "null share")):
            return f"{value:.1%}", True
        return f"{value:.4g}", True
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M") + ("Z" if value.tzinfo else ""), False
    return str(value), False


def table_html(frame: pl.DataFrame, caption: str = "") -> str:
    """A frame as an HTML table (at most `MAX_TABLE_ROWS` rows, with a note when cut)."""
    head = "".join(f'<th scope="col">{html.escape(c)}</th>' for c in frame.columns)
    body = []
    for row in frame.head(MAX_TABLE_ROWS).iter_rows():
        cells = []
        for col, value in zip(frame.columns, row, strict=True):
            text, num = _cell(value, col)
            cls = ' class="num"' if num else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    more = ""
    if frame.height > MAX_TABLE_ROWS:
        more = f'<p class="note">First {MAX_TABLE_ROWS:,} of {frame.height:,} rows.</p>'
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _json_script(data: object, attrs: str) -> str:
    # "</" cannot end the element early once escaped; JSON parsers read "<\/" as "</".
    text = orjson.dumps(data).decode().replace("</", "<\\/")
    return f'<script type="application/json" {attrs}>{text}</script>'


def _figure(fig: Figure, n: int) -> str:
    chart_id = f"chart-{n}"
    attrs = f'data-chart="{chart_id}" data-key="{html.escape(fig.key)}"'
    return (
        f'<figure id="{html.escape(fig.key)}" class="figure">'
        f"<h3>{html.escape(fig.title)}</h3>"
        f'<div class="chart" id="{chart_id}" role="img" aria-label="{html.escape(fig.title)}"></div>'
        f"{_json_script(fig.spec, attrs)}"
        f"<figcaption>{html.escape(fig.caption)}</figcaption>"
        f"<details><summary>Table: {html.escape(fig.title)}</summary>{table_html(fig.table)}</details>"
        "</figure>"
    )


_STYLE = """
:root { color: #111; background: #fff; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
body { max-width: 1000px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; } h2 { border-bottom: 2px solid #111; padding-bottom: .2rem;
  margin-top: 2.2rem; } h3 { font-size: 1rem; margin: 1.2rem 0 .3rem; }
.sub { color: #444; margin: 0 0 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .85rem; }
th, td { border: 1px solid #bbb; padding: .15rem .45rem; text-align: left; vertical-align: top; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: .2rem 0; }
td pre, pre { white-space: pre-wrap; word-break: break-all; margin: 0; font-size: .8rem; }
.glance td.status { font-weight: 700; white-space: nowrap; } .glance a { color: inherit; }
.chart svg { max-width: 100%; height: auto; } .figure { margin: 0 0 1.4rem; }
figcaption { font-size: .85rem; color: #333; } .note { font-size: .85rem; color: #333; }
details summary { cursor: pointer; font-size: .85rem; margin: .2rem 0; }
nav ol { columns: 2; font-size: .9rem; }
@media print {
  body { max-width: none; padding: 0; } nav { display: none; }
  h2 { break-after: avoid; } .figure, table { break-inside: avoid; } details summary { display: none; }
}
"""

# Draw every chart; mark the body when all are drawn (or one failed: its error goes to the console).
_SCRIPT = """
const jobs = [];
for (const el of document.querySelectorAll('script[data-chart]')) {
  const target = document.getElementById(el.dataset.chart);
  jobs.push(vegaEmbed(target, JSON.parse(el.textContent), {renderer: 'svg', actions: false})
    .then(() => { target.dataset.rendered = 'yes'; }));
}
Promise.all(jobs).then(() => { document.body.dataset.renderMs = performance.now().toFixed(0);
                                document.body.dataset.charts = 'rendered'; },
                       (err) => { document.body.dataset.charts = 'failed'; console.error(err); });
window.addEventListener('beforeprint', () => { for (const d of document.querySelectorAll('details')) d.open = true; });
"""

_SYMBOL = {"ok": "✓ ok", "check": "! check", "n/a": "\u2013 not in the sources"}


def _glance(items: list[Glance]) -> str:
    rows = "".join(
        f'<tr><th scope="row"><a href="#{html.escape(g.anchor)}">{html.escape(g.question)}</a></th>'
        f'<td class="status">{_SYMBOL[g.status]}</td><td>{html.escape(g.answer)}</td></tr>'
        for g in items
    )
    return f'<table class="glance"><caption>At a glance</caption><tbody>{rows}</tbody></table>'


def _section(sec: Section, counter: list[int]) -> str:
    parts = [f'<section id="{html.escape(sec.key)}"><h2>{html.escape(sec.title)}</h2>']
    if sec.intro:
        parts.append(f"<p>{html.escape(sec.intro)}</p>")
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in sec.notes]
    for fig in sec.figures:
        counter[0] += 1
        parts.append(_figure(fig, counter[0]))
    for caption, frame in sec.tables:
        if frame.height > COLLAPSE_ROWS:  # long tables fold away (and unfold for printing)
            parts.append(f"<details><summary>{html.escape(caption)} ({frame.height:,} rows)</summary>")
            parts.append(f"{table_html(frame)}</details>")
        else:
            parts.append(table_html(frame, caption))
    parts.append("</section>")
    return "".join(parts)


def render_page(title: str, subtitle: str, glance: list[Glance], sections: list[Section], runtime: str) -> str:
    """The whole page as text."""
    counter = [0]
    body = "".join(_section(s, counter) for s in sections)
    nav = "".join(f'<li><a href="#{html.escape(s.key)}">{html.escape(s.title)}</a></li>' for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body data-charts="pending"><header><h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>'
        f"</header>{_glance(glance)}<nav><ol>{nav}</ol></nav><main>{body}</main>"
        f'<script type="module">{runtime}</script><script type="module">{_SCRIPT}</script></body></html>\n'
    )
