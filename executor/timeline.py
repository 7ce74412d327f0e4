"""The timeline picture of a run: a Gantt chart of every attempt, as SVG or one HTML page.

    from executor.timeline import render_html, render_svg
    Path("run.html").write_text(render_html(result))   # or result.to_html()

Lanes are grouped by worker (a process; its threads are named in each bar's tooltip),
one row per step and per map item (a map with many items packs them into a few rows).
Queue wait is the light bar before an attempt, retries are separate bars with the wait
between them dashed, the critical path is outlined and linked, and failed, cancelled,
skipped and upstream_failed steps each look different (see the legend). The HTML page
adds the run's numbers, its critical path step by step, every step's row, and each
error with its traceback.

Everything is self-contained: inline CSS and SVG, no script, no font or image to fetch
(the page's Content-Security-Policy forbids any). Every text that comes from a run
(step ids, tools, workers, errors) is escaped.
"""

from __future__ import annotations

import itertools
import math
from datetime import datetime

from executor.diagram import format_seconds
from executor.report import failures
from executor.result import TERMINAL_RUN, ExecutionResult
from executor.timeline_model import (
    _X,
    BAR_H,
    CHAR_W,
    COLORS,
    CRITICAL,
    FONT,
    GRID,
    GROUP_H,
    MAX_TRACEBACK,
    MONO,
    MUTED,
    ROW_H,
    TEXT,
    TOP,
    WAIT_FILL,
    WAIT_H,
    WIDTH,
    Bar,
    Row,
    _aware,
    _cut,
    _has_time,
    _process,
    _tick_label,
    _ticks,
    _worker_of,
    build_timeline,
    esc,
)


def render_svg(
    result: ExecutionResult, now: datetime | None = None, *, heading: bool = True
) -> str:
    """The run's Gantt chart alone, as a standalone SVG document (with its legend).

    Args:
        now: the end of the axis for a run still going (default: the current time).
        heading: start with a line naming the flow, run, status and wall time.
    """
    tl = build_timeline(result, now)
    rows = [r for g in tl.groups for r in g.rows]
    longest = max((len(r.label) + (2 if r.item else 0) for r in rows), default=8)
    tools = max((len(r.tool) for r in rows if not r.item), default=0)
    label_w = int(min(max(18 + max(longest, tools * 0.9) * CHAR_W * 1.05, 150), 320))
    x0, x1 = label_w + 16, WIDTH - 24
    scale = (x1 - x0) / tl.span

    def x(t: float) -> float:
        return x0 + max(t, 0.0) * scale

    top = TOP if heading else TOP - 26
    height = top + len(tl.groups) * GROUP_H + len(rows) * ROW_H + 70
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dr-chart" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{esc(f"Timeline of run {result.run_id} of {result.flow_name}")}">',
        f"<title>{esc(f'{result.flow_name} · run {result.run_id} · {result.status}')}</title>",
        _svg_defs(),
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
    ]
    if heading:
        out.append(
            f'<text x="12" y="20" class="dr-h">{esc(result.flow_name)} '
            f'<tspan class="dr-m">v{esc(result.flow_version)} · run {esc(result.run_id)} · '
            f"{esc(result.status)} in {esc(format_seconds(result.wall_time))}</tspan></text>"
        )
    body_top = top
    body_bottom = height - 62
    step, ticks = _ticks(tl.span)
    for t in ticks:
        xt = x(t)
        out.append(
            f'<line x1="{xt:.1f}" y1="{body_top - 6}" x2="{xt:.1f}" y2="{body_bottom}" '
            f'stroke="{GRID}"/>'
        )
        out.append(
            f'<text x="{xt:.1f}" y="{body_top - 10}" class="dr-t" text-anchor="middle">'
            f"{esc(_tick_label(t, step))}</text>"
        )
    out.append(
        f'<text x="{x0 - 8}" y="{body_top - 10}" class="dr-t" text-anchor="end">time since '
        "submit</text>"
    )
    y = body_top
    # A critical step's first start and last end, each with its row's y.
    ends: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}
    for gi, group in enumerate(tl.groups):
        label = "worker " + group.name if group.name != "not started" else group.name
        out.append(
            f'<rect x="0" y="{y}" width="{WIDTH}" height="{GROUP_H}" fill="#f1f5f9"/>'
            f'<text x="12" y="{y + 17}" class="dr-g">{esc(label)}'
            f' <tspan class="dr-m">· {esc(group.note)}</tspan></text>'
        )
        y += GROUP_H
        for ri, row in enumerate(group.rows):
            cy = y + ROW_H / 2
            if ri % 2 == 1:
                out.append(f'<rect x="0" y="{y}" width="{WIDTH}" height="{ROW_H}" fill="#fafafa"/>')
            out.append(_row_label(row, cy, label_w))
            if group.name == "not started":
                out.append(_pill(x0 + 2, cy, row.status))
            for bar in row.bars:
                out.append(_bar(bar, x, cy, x1))
            _label_last(out, row, x, cy, x1)
            if row.critical and not row.item:
                for seg in row.bars:
                    if seg.kind not in ("attempt", "span"):
                        continue
                    first, last = ends.get(row.step_id, ((math.inf, 0.0), (-math.inf, 0.0)))
                    if seg.start < first[0]:
                        first = (seg.start, cy)
                    if seg.end > last[0]:
                        last = (seg.end, cy)
                    ends[row.step_id] = (first, last)
            y += ROW_H
        if gi < len(tl.groups) - 1:
            out.append(f'<line x1="0" y1="{y}" x2="{WIDTH}" y2="{y}" stroke="{GRID}"/>')
    path = [s for s in result.critical_path if s in ends]
    for a, b in itertools.pairwise(path):
        xa, ya = x(ends[a][1][0]), ends[a][1][1]
        xb, yb = x(ends[b][0][0]), ends[b][0][1]
        # From the end of one bar to the start of the next: an elbow down (or up) at the
        # handover, so that back-to-back steps get a clean vertical link.
        down = 1 if yb >= ya else -1
        y_from, y_to = ya + down * BAR_H / 2, yb - down * BAR_H / 2
        if abs(xb - xa) < 8:
            d = f"M{xa:.1f},{y_from:.1f} V{y_to:.1f}"
        else:
            d = f"M{xa:.1f},{y_from:.1f} V{yb:.1f} H{xb:.1f}"
        out.append(
            f'<path d="{d}" fill="none" stroke="{CRITICAL}" stroke-width="1.5" '
            'stroke-dasharray="3 2" class="dr-cp"/>'
        )
    if tl.finished is not None:
        xf = x(tl.finished)
        out.append(
            f'<line x1="{xf:.1f}" y1="{body_top - 6}" x2="{xf:.1f}" y2="{body_bottom}" '
            f'stroke="{TEXT}" stroke-width="1" stroke-dasharray="2 3"/>'
        )
    elif tl.running:
        xn = x(tl.span)
        out.append(
            f'<line x1="{xn:.1f}" y1="{body_top - 6}" x2="{xn:.1f}" y2="{body_bottom}" '
            f'stroke="{COLORS["running"][1]}" stroke-width="1.5"/>'
            f'<text x="{xn - 4:.1f}" y="{body_bottom - 4}" class="dr-t" text-anchor="end">now'
            "</text>"
        )
    out.append(_legend(body_bottom + 22, result))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_defs() -> str:
    c_fill, c_stroke = COLORS["cancelled"]
    return (
        "<defs>"
        '<pattern id="dr-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="{c_fill}"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{c_stroke}" stroke-width="1.5" '
        'stroke-opacity="0.55"/></pattern>'
        "</defs>"
        "<style>"
        f".dr-chart text{{font-family:{FONT};fill:{TEXT}}}"
        ".dr-h{font-size:15px;font-weight:600}"
        ".dr-g{font-size:12px;font-weight:600}"
        f".dr-m{{font-size:12px;font-weight:400;fill:{MUTED}}}"
        f".dr-t{{font-size:11px;fill:{MUTED}}}"
        ".dr-l{font-size:12px}"
        f".dr-tool{{font-size:11px;fill:{MUTED}}}"
        ".dr-b{font-size:11px}"
        f".dr-o{{font-size:11px;fill:{MUTED}}}"
        ".dr-crit{font-weight:700}"
        f".dr-chart .dr-item{{fill:{MUTED}}}"
        "</style>"
    )


def _row_label(row: Row, cy: float, label_w: int) -> str:
    indent = 28 if row.item else 12
    room = int((label_w - indent) / CHAR_W)
    parts = [f"<g><title>{esc(row.title or row.label)}</title>"]
    if row.critical and not row.item:
        parts.append(
            f'<rect x="3" y="{cy - 8:.1f}" width="4" height="16" rx="1" fill="{CRITICAL}"/>'
        )
    cls = "dr-l dr-crit" if row.critical and not row.item else "dr-l"
    if row.item:
        cls += " dr-item"
    label = _cut(row.label, room)
    tool = ""
    left = room - len(label) - 1
    if row.tool and row.tool != row.label and left >= 4:
        tool = f' <tspan class="dr-tool">{esc(_cut(row.tool, left))}</tspan>'
    parts.append(f'<text x="{indent}" y="{cy + 4:.1f}" class="{cls}">{esc(label)}{tool}</text>')
    parts.append("</g>")
    return "".join(parts)


def _pill(x: float, cy: float, status: str) -> str:
    fill, stroke = COLORS.get(status, COLORS["pending"])
    w = len(status) * 6.4 + 14
    dash = ' stroke-dasharray="3 2"' if status == "skipped" else ""
    return (
        f'<rect x="{x:.1f}" y="{cy - 8:.1f}" width="{w:.1f}" height="16" rx="8" '
        f'fill="{fill}" stroke="{stroke}"{dash}/>'
        f'<text x="{x + w / 2:.1f}" y="{cy + 4:.1f}" class="dr-b" text-anchor="middle">'
        f"{esc(status)}</text>"
    )


def _bar(bar: Bar, x: _X, cy: float, x_max: float) -> str:
    xa = x(bar.start)
    w = max(x(bar.end) - xa, 1.5 if bar.kind == "attempt" else 0.0)
    title = f"<title>{esc(bar.title)}</title>" if bar.title else ""
    if bar.kind == "wait":
        fill = WAIT_FILL if bar.status == "queued" else COLORS.get(bar.status, COLORS["pending"])[0]
        return (
            f'<rect x="{xa:.1f}" y="{cy - WAIT_H / 2:.1f}" width="{w:.1f}" height="{WAIT_H}" '
            f'rx="2" fill="{fill}" class="dr-wait">{title}</rect>'
        )
    if bar.kind == "retry":
        return (
            f'<line x1="{xa:.1f}" y1="{cy:.1f}" x2="{xa + w:.1f}" y2="{cy:.1f}" '
            f'stroke="{COLORS["failed"][1]}" stroke-width="1.5" stroke-dasharray="3 3" '
            f'class="dr-retry">{title}</line>'
        )
    fill, stroke = COLORS.get(bar.status, COLORS["pending"])
    if bar.status in ("cancelled", "timed_out"):
        fill = "url(#dr-hatch)"
    if bar.kind == "span":  # a map step's envelope: a bracket over its items
        extra = (
            f' stroke="{CRITICAL}" stroke-width="2.5"' if bar.critical else f' stroke="{stroke}"'
        )
        h = BAR_H - 4
        return (
            f'<g class="dr-span">{title}<rect x="{xa:.1f}" y="{cy - h / 2:.1f}" '
            f'width="{w:.1f}" height="{h}" rx="3" fill="{fill}" fill-opacity="0.45"{extra}/>'
            f"{_bar_text(bar, xa, w, cy)}</g>"
        )
    stroke_w = 1.0
    if bar.critical:
        stroke, stroke_w = CRITICAL, 2.5
    return (
        f'<g class="dr-bar dr-{esc(bar.status)}">{title}<rect x="{xa:.1f}" '
        f'y="{cy - BAR_H / 2:.1f}" width="{w:.1f}" height="{BAR_H}" rx="3" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="{stroke_w}"/>{_bar_text(bar, xa, w, cy)}</g>'
    )


def _bar_text(bar: Bar, xa: float, w: float, cy: float) -> str:
    if not bar.text or w < len(bar.text) * CHAR_W * 0.9 + 8:
        return ""
    return (
        f'<text x="{xa + w / 2:.1f}" y="{cy + 4:.1f}" class="dr-b" text-anchor="middle">'
        f"{esc(bar.text)}</text>"
    )


def _label_last(out: list[str], row: Row, x: _X, cy: float, x_max: float) -> None:
    """The last bar's text to its right when it does not fit inside (if there is room)."""
    drawn = [b for b in row.bars if b.kind in ("attempt", "span") and b.text]
    if not drawn or (row.item and not row.label.startswith("[")):
        return  # packed rows of items: many bars, no room to label them outside
    bar = drawn[-1]
    xa, xb = x(bar.start), x(bar.end)
    need = len(bar.text) * CHAR_W * 0.9 + 8
    if xb - xa >= need:
        return
    if xb + 4 + need <= x_max:
        out.append(f'<text x="{xb + 4:.1f}" y="{cy + 4:.1f}" class="dr-o">{esc(bar.text)}</text>')
    elif xa - 4 - need >= 0:
        out.append(
            f'<text x="{xa - 4:.1f}" y="{cy + 4:.1f}" class="dr-o" text-anchor="end">'
            f"{esc(bar.text)}</text>"
        )


LEGEND = (
    ("succeeded", "attempt succeeded"),
    ("failed", "attempt failed"),
    ("cancelled", "cancelled"),
    ("upstream_failed", "upstream failed"),
    ("skipped", "skipped"),
    ("running", "running"),
    ("wait", "queue wait"),
    ("retry", "retry wait"),
    ("critical", "critical path"),
)


def _legend(y: float, result: ExecutionResult) -> str:
    parts = [f'<g class="dr-legend"><text x="12" y="{y + 4}" class="dr-g">legend</text>']
    xx = 70.0
    for key, text in LEGEND:
        if key == "wait":
            parts.append(
                f'<rect x="{xx}" y="{y - WAIT_H / 2 + 1}" width="22" height="{WAIT_H}" rx="2" '
                f'fill="{WAIT_FILL}"/>'
            )
        elif key == "retry":
            parts.append(
                f'<line x1="{xx}" y1="{y + 1}" x2="{xx + 22}" y2="{y + 1}" '
                f'stroke="{COLORS["failed"][1]}" stroke-width="1.5" stroke-dasharray="3 3"/>'
            )
        elif key == "critical":
            parts.append(
                f'<rect x="{xx}" y="{y - 6}" width="22" height="14" rx="3" '
                f'fill="{COLORS["succeeded"][0]}" stroke="{CRITICAL}" stroke-width="2.5"/>'
            )
        elif key in ("upstream_failed", "skipped"):
            fill, stroke = COLORS[key]
            dash = ' stroke-dasharray="3 2"' if key == "skipped" else ""
            parts.append(
                f'<rect x="{xx}" y="{y - 6}" width="22" height="14" rx="7" fill="{fill}" '
                f'stroke="{stroke}"{dash}/>'
            )
        else:
            fill, stroke = COLORS[key]
            if key == "cancelled":
                fill = "url(#dr-hatch)"
            parts.append(
                f'<rect x="{xx}" y="{y - 6}" width="22" height="14" rx="3" fill="{fill}" '
                f'stroke="{stroke}"/>'
            )
        parts.append(f'<text x="{xx + 28}" y="{y + 5}" class="dr-t">{esc(text)}</text>')
        xx += 28 + len(text) * 6.0 + 22
    parts.append("</g>")
    note = (
        "bars: attempts (✕ failed, #n = attempt n) · rows: steps and map items, grouped by "
        "worker · hover a bar for its times, worker and error"
    )
    parts.append(f'<text x="12" y="{y + 26}" class="dr-t">{esc(note)}</text>')
    return "".join(parts)


# HTML -------------------------------------------------------------------------------------
PAGE_CSS = f"""
:root {{ color-scheme: light; }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; padding: 24px 28px 40px; font-family: {FONT}; color: {TEXT};
  background: #f8fafc; font-size: 14px; line-height: 1.45; }}
header h1 {{ font-size: 22px; margin: 0 0 4px; font-weight: 650; }}
header h1 .ver {{ color: {MUTED}; font-weight: 400; font-size: 16px; }}
.meta {{ color: {MUTED}; margin: 0 0 16px; font-size: 13px; }}
.meta code {{ font-family: {MONO}; font-size: 12px; color: #374151; }}
.pill {{ display: inline-block; padding: 1px 10px; border-radius: 999px; font-size: 13px;
  font-weight: 600; border: 1px solid; vertical-align: 3px; margin-left: 8px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 14px; }}
.card {{ background: #fff; border: 1px solid #e2e8f0; border-radius: 10px; padding: 10px 16px;
  min-width: 140px; }}
.card .k {{ font-size: 12px; color: {MUTED}; text-transform: uppercase; letter-spacing: .04em; }}
.card .v {{ font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }}
.card .s {{ font-size: 12px; color: {MUTED}; }}
.card.cp {{ border-color: {CRITICAL}; }}
.card.cp .v {{ color: {CRITICAL}; }}
.path {{ margin: 0 0 6px; }}
.path .step {{ font-family: {MONO}; font-size: 13px; background: #ede9fe; color: #4c1d95;
  border-radius: 4px; padding: 1px 6px; }}
.hint {{ margin: 0 0 18px; color: #374151; }}
section {{ margin-top: 22px; }}
h2 {{ font-size: 16px; margin: 0 0 8px; }}
.chart {{ background: #fff; border: 1px solid #e2e8f0; border-radius: 10px; padding: 6px;
  overflow-x: auto; }}
.chart svg {{ display: block; width: 100%; max-width: 1400px; height: auto; }}
table {{ border-collapse: collapse; background: #fff; border: 1px solid #e2e8f0;
  font-size: 13px; min-width: 60%; }}
th, td {{ text-align: left; padding: 5px 12px; border-bottom: 1px solid #f1f5f9;
  vertical-align: top; }}
th {{ background: #f8fafc; font-weight: 600; color: #374151; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
td code {{ font-family: {MONO}; font-size: 12px; }}
.st {{ font-weight: 600; }}
.bar {{ display: inline-block; height: 8px; background: {CRITICAL}; border-radius: 2px;
  vertical-align: middle; opacity: .75; }}
.err {{ background: #fff; border: 1px solid #fecaca; border-left: 4px solid #dc2626;
  border-radius: 8px; padding: 10px 14px; margin-bottom: 10px; }}
.err.retried {{ border-color: #fde68a; border-left-color: #d97706; }}
.err h3 {{ font-size: 14px; margin: 0 0 4px; }}
.err .where {{ color: {MUTED}; font-weight: 400; }}
.err .msg {{ font-family: {MONO}; font-size: 13px; white-space: pre-wrap; margin: 4px 0;
  word-break: break-word; }}
.err .type {{ color: #b91c1c; font-weight: 700; }}
details summary {{ cursor: pointer; color: #374151; font-size: 13px; }}
pre {{ font-family: {MONO}; font-size: 12px; background: #0f172a; color: #e2e8f0;
  padding: 10px 12px; border-radius: 6px; overflow-x: auto; white-space: pre; }}
footer {{ margin-top: 28px; color: {MUTED}; font-size: 12px; }}
"""


def render_html(result: ExecutionResult, now: datetime | None = None) -> str:
    """One self-contained HTML page: the run's numbers, its timeline, critical path,
    steps and errors. No scripts, nothing fetched."""
    from executor import __version__

    fill, stroke = COLORS.get(result.status, COLORS["pending"])
    title = f"{result.flow_name} · run {result.run_id} · {result.status}"
    counts: dict[str, int] = {}
    for rec in result.steps.values():
        counts[rec.status] = counts.get(rec.status, 0) + 1
    workers = _workers(result)
    submitted = (
        _aware(result.submitted_at).strftime("%Y-%m-%d %H:%M:%S UTC")
        if result.submitted_at
        else "-"
    )
    wall = result.wall_time
    cp_share = (
        f"{result.critical_path_time / wall:.0%} of wall time"
        if wall and result.critical_path
        else ""
    )
    step_counts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="dagrelay">',
        f"<title>{esc(title)} — dagrelay</title>",
        f"<style>{PAGE_CSS}</style></head><body>",
        "<header>",
        f'<h1>{esc(result.flow_name)} <span class="ver">v{esc(result.flow_version)}</span>'
        f'<span class="pill" style="background:{fill};border-color:{stroke}">'
        f"{esc(result.status)}</span></h1>",
        f'<p class="meta">run <code>{esc(result.run_id)}</code> · submitted {esc(submitted)}'
        f" · {len(workers)} worker{'s' if len(workers) != 1 else ''}"
        + (f" ({esc(', '.join(workers[:4]))}{'…' if len(workers) > 4 else ''})" if workers else "")
        + "</p>",
        '<div class="cards">',
        _card("wall time", format_seconds(wall), "submit to finish"),
        _card("step time", format_seconds(result.step_time), "sum of step run times"),
        _card(
            "critical path",
            format_seconds(result.critical_path_time),
            cp_share or "the longest chain of dependencies",
            "cp",
        ),
        _card(
            "parallelism",
            f"{result.parallelism:.2f}×" if result.parallelism is not None else "-",
            "step time / wall time",
        ),
        _card("steps", str(len(result.steps)), step_counts),
        "</div>",
    ]
    if result.critical_path:
        chain = " → ".join(
            f'<span class="step">{esc(s)}</span> {esc(format_seconds(_dur(result, s)))}'
            for s in result.critical_path
        )
        out.append(f'<p class="path"><b>Critical path:</b> {chain}</p>')
    out.append(f'<p class="hint">{_hint(result)}</p>')
    if result.error:
        out.append(
            f'<p class="hint"><b>Run error:</b> <code>{esc(_cut(result.error, 2000))}</code></p>'
        )
    out.append("</header>")
    out.append('<section><h2>Timeline</h2><div class="chart">')
    out.append(render_svg(result, now, heading=False))
    out.append("</div></section>")
    out.append(_critical_table(result))
    out.append(_errors(result))
    out.append(_steps_table(result))
    out.append(
        f"<footer>dagrelay {esc(__version__)} · times are wall-clock UTC taken where the "
        "work ran; durations from that machine's monotonic clock</footer>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _card(key: str, value: str, sub: str, cls: str = "") -> str:
    return (
        f'<div class="card {cls}"><div class="k">{esc(key)}</div>'
        f'<div class="v">{esc(value)}</div><div class="s">{esc(sub)}</div></div>'
    )


def _workers(result: ExecutionResult) -> list[str]:
    found: dict[str, None] = {}
    for rec in result.steps.values():
        for r in [rec, *(rec.items or ())]:
            for a in r.attempts:
                if a.worker:
                    found[_process(a.worker)] = None
            if r.worker:
                found[_process(r.worker)] = None
    return sorted(found)


def _dur(result: ExecutionResult, sid: str) -> float | None:
    rec = result.steps.get(sid)
    return rec.duration if rec is not None else None


def _hint(result: ExecutionResult) -> str:
    """One or two sentences on where the time went and what to speed up."""
    wall = result.wall_time
    if result.status not in TERMINAL_RUN:
        return "The run is still going: this picture shows it so far."
    if not wall or not result.critical_path:
        return "No step ran long enough to say where the time went."
    timed = [(s, _dur(result, s) or 0.0) for s in result.critical_path]
    top, top_t = max(timed, key=lambda p: p[1])
    waits = sum(
        (result.steps[s].queue_wait or 0.0) for s in result.critical_path if s in result.steps
    )
    gap = max(wall - result.critical_path_time, 0.0)
    text = (
        f"The critical path took {esc(format_seconds(result.critical_path_time))} of "
        f"{esc(format_seconds(wall))} wall time: no executor could finish sooner without "
        f"faster steps on it. Its longest step, <b>{esc(top)}</b> "
        f"({esc(format_seconds(top_t))}, {top_t / wall:.0%} of the run), is the one to "
        "optimise first."
    )
    if gap > 0.25 * wall and gap > 0.005:
        text += (
            f" {esc(format_seconds(gap))} of the run is outside the path's steps "
            f"(queue wait on the path: {esc(format_seconds(waits))}): more workers or threads, "
            "or less per-step overhead, would help."
        )
    return text


def _critical_table(result: ExecutionResult) -> str:
    if not result.critical_path:
        return ""
    wall = result.wall_time or 0.0
    rows = []
    for sid in result.critical_path:
        rec = result.steps.get(sid)
        if rec is None:
            continue
        d = rec.duration or 0.0
        share = d / wall if wall else 0.0
        rows.append(
            f"<tr><td><code>{esc(sid)}</code></td><td>{esc(rec.tool)}</td>"
            f'<td class="n">{esc(format_seconds(rec.duration))}</td>'
            f'<td class="n">{esc(format_seconds(rec.queue_wait))}</td>'
            f'<td class="n">{share:.0%} <span class="bar" style="width:{share * 120:.0f}px">'
            "</span></td></tr>"
        )
    return (
        "<section><h2>Critical path</h2><table><thead><tr><th>step</th><th>tool</th>"
        "<th>duration</th><th>queue wait</th><th>share of wall time</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _errors(result: ExecutionResult) -> str:
    errors = failures(result)
    if not errors:
        return ""
    out = ["<section><h2>Errors</h2>"]
    for rec, number, error, final in errors[:200]:
        where = [f"tool {rec.tool}"]
        if number is not None:
            total = len(rec.attempts)
            where.append(f"attempt {number} of {total}" if total > 1 else f"attempt {number}")
        worker = next((a.worker for a in rec.attempts if a.number == number), None) or rec.worker
        if worker:
            where.append(f"worker {worker}")
        label = "failed" if final else "attempt failed, retried"
        out.append(
            f'<article class="err{"" if final else " retried"}">'
            f"<h3><code>{esc(rec.step_id)}</code> {esc(label)} "
            f'<span class="where">· {esc(" · ".join(where))}</span></h3>'
            f'<div class="msg"><span class="type">{esc(error.type)}</span>: '
            f"{esc(error.message)}</div>"
        )
        if error.traceback:
            out.append(
                "<details><summary>Traceback from the worker</summary>"
                f"<pre>{esc(_cut(error.traceback, MAX_TRACEBACK))}</pre></details>"
            )
        out.append("</article>")
    out.append("</section>")
    return "".join(out)


def _steps_table(result: ExecutionResult) -> str:
    rows = []
    for rec in result.steps.values():
        stroke = COLORS.get(rec.status, COLORS["pending"])[1]
        tries = (
            sum(len(c.attempts) for c in rec.items) if rec.items is not None else len(rec.attempts)
        )
        items = f" ({len(rec.items)} items)" if rec.items is not None else ""
        rows.append(
            f"<tr><td><code>{esc(rec.step_id)}</code>{esc(items)}</td><td>{esc(rec.tool)}</td>"
            f'<td class="st" style="color:{stroke}">{esc(rec.status)}</td>'
            f'<td class="n">{tries or "-"}</td>'
            f'<td class="n">{esc(format_seconds(rec.queue_wait))}</td>'
            f'<td class="n">{esc(format_seconds(rec.duration))}</td>'
            f"<td>{esc(_worker_of(rec) if _has_time(rec) or rec.items else '-')}</td></tr>"
        )
    return (
        "<section><h2>Steps</h2><table><thead><tr><th>step</th><th>tool</th><th>status</th>"
        "<th>attempts</th><th>queue wait</th><th>duration</th><th>worker</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table></section>"
    )


__all__ = ["build_timeline", "esc", "render_html", "render_svg"]
