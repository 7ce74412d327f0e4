"""A run's timeline page: its numbers, critical path, steps and errors around the chart.

`render_page` takes the chart as text rather than drawing it, so this module never
imports `executor.views.timeline.chart` (whose `render_html` calls it) and the two have no import
cycle. The page is self-contained: inline CSS and SVG, and a Content-Security-Policy
that forbids any script, font or image to fetch. Every text that comes from a run (step
ids, tools, workers, errors) is escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime

from executor.run.records import TERMINAL_RUN, RunRecord, StepRecord
from executor.version import __version__
from executor.views.format import format_seconds
from executor.views.report import failure_place, failures
from executor.views.timeline.layout import (
    COLORS,
    CRITICAL,
    FONT,
    MAX_TRACEBACK,
    MONO,
    MUTED,
    TEXT,
    _aware,
    _cut,
    _has_time,
    _process,
    _worker_of,
    esc,
)

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


def render_page(result: RunRecord, chart: str) -> str:
    """One self-contained HTML page around `chart` (an SVG document): the run's numbers,
    its critical path, steps and errors. No scripts, nothing fetched."""
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
        _card("wall time", format_seconds(wall), "start to finish"),
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
    out.append(chart)
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


def _workers(result: RunRecord) -> list[str]:
    found: dict[str, None] = {}
    for rec in result.steps.values():
        for r in [rec, *(rec.items or ())]:
            for a in r.attempts:
                if a.worker:
                    found[_process(a.worker)] = None
            if r.worker:
                found[_process(r.worker)] = None
    return sorted(found)


def _dur(result: RunRecord, sid: str) -> float | None:
    rec = result.steps.get(sid)
    return rec.duration if rec is not None else None


def _hint(result: RunRecord) -> str:
    """One or two sentences on where the time went and what to speed up."""
    wall = result.wall_time
    if result.status not in TERMINAL_RUN:
        return "The run is still going: this picture shows it so far."
    first = first_failed(result) if result.status == "failed" else None
    if first is not None:
        error = f": <code>{esc(_cut(str(first.error), 300))}</code>" if first.error else ""
        return (
            f"The run failed: step <b>{esc(first.step_id)}</b> (tool {esc(first.tool)}) failed "
            f"first{error}. Fix it, then <code>dagrelay retry {esc(result.run_id)}</code> "
            "runs what did not succeed again, reusing the rest."
        )
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


def first_failed(result: RunRecord) -> StepRecord | None:
    """The step whose failure came first (by when it finished), if any step failed."""
    failed = [r for r in result.steps.values() if r.status == "failed"]
    if not failed:
        return None
    far = datetime.max.replace(tzinfo=UTC)
    return min(failed, key=lambda r: _aware(r.finished_at) if r.finished_at else far)


def _critical_table(result: RunRecord) -> str:
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


def _errors(result: RunRecord) -> str:
    errors = failures(result)
    if not errors:
        return ""
    out = ["<section><h2>Errors</h2>"]
    for rec, number, error, final in errors[:200]:
        where = failure_place(rec, number)
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


def _steps_table(result: RunRecord) -> str:
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


__all__ = ["PAGE_CSS", "render_page"]
