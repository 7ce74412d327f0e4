"""The timeline picture of a run: a Gantt chart of every attempt, as SVG or one HTML page.

    from executor.views.timeline.chart import render_html, render_svg
    Path("run.html").write_text(render_html(result))   # or result.to_html()

Lanes are grouped by worker (a process; its threads are named in each bar's tooltip),
one row per step and per map item (a map with many items packs them into a few rows).
Queue wait is the light bar before an attempt, retries are separate bars with the wait
between them dashed, the critical path is outlined and linked, and failed, cancelled,
skipped and upstream_failed steps each look different (see the legend). The HTML page
(`executor.views.timeline.page`) adds the run's numbers, its critical path step by step, every
step's row, and each error with its traceback.

Everything is self-contained: inline CSS and SVG, no script, no font or image to fetch
(the page's Content-Security-Policy forbids any). Every text that comes from a run
(step ids, tools, workers, errors) is escaped.
"""

from __future__ import annotations

import itertools
import math
from datetime import datetime

from executor.run.records import RunRecord
from executor.views.format import format_seconds
from executor.views.timeline.layout import (
    _X,
    BAR_H,
    CHAR_W,
    COLORS,
    CRITICAL,
    FONT,
    GRID,
    GROUP_H,
    MUTED,
    ROW_H,
    TEXT,
    TOP,
    WAIT_FILL,
    WAIT_H,
    WIDTH,
    Bar,
    Row,
    _cut,
    _tick_label,
    _ticks,
    build_timeline,
    esc,
)
from executor.views.timeline.page import render_page


def render_svg(result: RunRecord, now: datetime | None = None, *, heading: bool = True) -> str:
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
        # The axis's own length (submit to finish), so the header and the bars agree;
        # the run's wall time (start to finish) is on the page.
        took = tl.finished if tl.finished is not None else result.wall_time
        out.append(
            f'<text x="12" y="20" class="dr-h">{esc(result.flow_name)} '
            f'<tspan class="dr-m">v{esc(result.flow_version)} · run {esc(result.run_id)} · '
            f"{esc(result.status)} in {esc(format_seconds(took))} from submit to "
            "finish</tspan></text>"
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


def _legend(y: float, result: RunRecord) -> str:
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


def render_html(result: RunRecord, now: datetime | None = None) -> str:
    """One self-contained HTML page: the run's numbers, its timeline, critical path,
    steps and errors. No scripts, nothing fetched."""
    return render_page(result, render_svg(result, now, heading=False))


__all__ = ["build_timeline", "esc", "render_html", "render_svg"]
