"""Where the timeline's bars go: attempts, queue waits, rows, worker groups, the time axis.

Built from a `RunRecord`; nothing is drawn here.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from executor.run.records import TERMINAL_RUN, RunRecord, StepError, StepRecord
from executor.views.format import format_seconds

# Geometry (SVG user units = CSS pixels) ------------------------------------------------
WIDTH = 1200
ROW_H = 24
GROUP_H = 26
BAR_H = 14
WAIT_H = 6
TOP = 58  # room for the title line and the time axis labels
CHAR_W = 6.6  # average width of a 12px sans-serif character, for fitting text
MAX_ITEM_ROWS = 10  # a map step with more items packs them into shared rows
MAX_LANES = 24  # at most this many packed rows of items per map step
MAX_TRACEBACK = 20_000  # characters of a traceback shown on the page
MAX_TOOLTIP = 300

# Status colours: fill, stroke. Attempts use their own outcome's colour.
COLORS: dict[str, tuple[str, str]] = {
    "succeeded": ("#86efac", "#15803d"),
    "failed": ("#fca5a5", "#b91c1c"),
    "cancelled": ("#fde68a", "#a16207"),
    "timed_out": ("#fde68a", "#a16207"),
    "upstream_failed": ("#fed7aa", "#c2410c"),
    "skipped": ("#e5e7eb", "#6b7280"),
    "running": ("#93c5fd", "#1d4ed8"),
    "queued": ("#c7d2fe", "#4338ca"),
    "pending": ("#f3f4f6", "#6b7280"),
}
WAIT_FILL = "#cbd5e1"
CRITICAL = "#7c3aed"
TEXT = "#111827"
MUTED = "#6b7280"
GRID = "#e5e7eb"
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", "DejaVu Sans", sans-serif'
MONO = 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace'
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


_At = Callable[[datetime | None], float | None]  # a time → seconds on the axis
_X = Callable[[float], float]  # seconds on the axis → x


def esc(text: object) -> str:
    """Text safe in HTML and SVG (XML) content and attribute values."""
    return html.escape(_CONTROL.sub("\ufffd", str(text)), quote=True)


# The picture, format-neutral ------------------------------------------------------------
@dataclass(slots=True)
class Bar:
    """One interval on a row. `kind`: attempt, wait (queue), retry (wait between
    attempts), span (a map step from first to last item)."""

    start: float
    end: float
    kind: str
    status: str
    text: str = ""
    title: str = ""
    critical: bool = False
    worker: str | None = None  # the worker process it ran on (attempts, and waits before)


@dataclass(slots=True)
class Row:
    """A step (or a map item, or a packed row of items) and its bars."""

    label: str
    tool: str
    status: str
    step_id: str
    bars: list[Bar] = field(default_factory=list)
    critical: bool = False
    item: bool = False
    title: str = ""


@dataclass(slots=True)
class Group:
    """The rows of one worker process (or the steps that never started)."""

    name: str
    rows: list[Row] = field(default_factory=list)
    note: str = ""


@dataclass(slots=True)
class Timeline:
    """What the chart shows: rows grouped by worker on one time axis (seconds from t0)."""

    t0: datetime
    span: float
    groups: list[Group]
    finished: float | None
    running: bool


def build_timeline(result: RunRecord, now: datetime | None = None) -> Timeline:
    """Lay the run's steps, items and attempts out in worker groups on one time axis."""
    times = [t for t in _all_times(result) if t is not None]
    origin = min(times) if times else (result.submitted_at or now or datetime.now(UTC))
    t0 = _aware(origin)
    running = result.status not in TERMINAL_RUN
    end_at = _aware(result.finished_at) if result.finished_at else None
    if end_at is None:
        end_at = max([*times, _aware(now or datetime.now(UTC))]) if running else None
    end_at = end_at or (max(times) if times else t0)

    def at(t: datetime | None) -> float | None:
        return None if t is None else (_aware(t) - t0).total_seconds()

    fallback_end = at(end_at) or 0.0
    critical = set(result.critical_path)
    blocks: dict[str, list[list[Row]]] = {}  # worker process → blocks of rows
    idle = Group("not started")
    for sid, rec in result.steps.items():
        is_critical = sid in critical
        if rec.items is not None:
            worker = _process(_worker_of(rec))
            blocks.setdefault(worker, []).append(_map_rows(rec, at, fallback_end, is_critical))
        elif _has_time(rec):
            # One row per worker the step's attempts ran on (a retry may move).
            by_worker: dict[str, Row] = {}
            for bar in _record_bars(rec, at, fallback_end, is_critical):
                worker = bar.worker or _process(_worker_of(rec))
                row = by_worker.get(worker)
                if row is None:
                    row = by_worker[worker] = Row(
                        sid, rec.tool, rec.status, sid, critical=is_critical
                    )
                    row.title = _row_title(rec)
                row.bars.append(bar)
            for worker, row in by_worker.items():
                blocks.setdefault(worker, []).append([row])
        else:
            idle.rows.append(Row(sid, rec.tool, rec.status, sid, title=_row_title(rec)))
    threads_by_process: dict[str, set[str]] = {}
    for rec in result.steps.values():
        for r in [rec, *(rec.items or ())]:
            for w in [r.worker, *(a.worker for a in r.attempts)]:
                if w and _thread(w):
                    threads_by_process.setdefault(_process(w), set()).add(_thread(w))
    ordered: list[Group] = []
    for worker, found in blocks.items():
        found.sort(key=_block_start)  # stable: flow order among equal starts
        group = Group(worker, [row for block in found for row in block])
        steps = {r.step_id for r in group.rows}
        busy = sum(b.end - b.start for r in group.rows for b in r.bars if b.kind == "attempt")
        threads = threads_by_process.get(worker, set())
        group.note = " · ".join(
            [
                f"{len(steps)} step{'s' if len(steps) != 1 else ''}",
                *([f"{len(threads)} threads"] if len(threads) > 1 else []),
                f"busy {format_seconds(busy)}",
            ]
        )
        ordered.append(group)
    ordered.sort(key=lambda g: _block_start(g.rows))
    if idle.rows:
        idle.note = f"{len(idle.rows)} step{'s' if len(idle.rows) != 1 else ''}"
        ordered.append(idle)
    last = max(
        [fallback_end, *(b.end for g in ordered for r in g.rows for b in r.bars)], default=0.0
    )
    finished = at(result.finished_at) if result.finished_at else None
    return Timeline(t0, max(last, 1e-6), ordered, finished, running)


def _block_start(rows: list[Row]) -> float:
    return min((b.start for r in rows for b in r.bars), default=math.inf)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _all_times(result: RunRecord) -> Iterable[datetime | None]:
    yield result.submitted_at
    yield result.started_at
    for rec in result.steps.values():
        for r in [rec, *(rec.items or ())]:
            yield r.queued_at
            yield r.started_at
            yield r.finished_at
            for a in r.attempts:
                yield a.started_at
                yield a.finished_at
    yield result.finished_at


def _has_time(rec: StepRecord) -> bool:
    return bool(rec.attempts) or rec.started_at is not None or rec.queued_at is not None


def _worker_of(rec: StepRecord) -> str:
    if rec.worker:
        return rec.worker
    for a in reversed(rec.attempts):
        if a.worker:
            return a.worker
    for child in rec.items or ():
        w = _worker_of(child)
        if w != "?":
            return w
    return "?"


def _process(worker: str) -> str:
    """`host:pid:thread` → `host:pid` (a worker's threads share one group)."""
    parts = worker.split(":")
    return ":".join(parts[:2]) if len(parts) > 2 else worker


def _thread(worker: str | None) -> str:
    parts = (worker or "").split(":")
    return ":".join(parts[2:]) if len(parts) > 2 else ""


def _row_title(rec: StepRecord) -> str:
    lines = [f"{rec.step_id} (tool {rec.tool}): {rec.status}"]
    if rec.error is not None:
        lines.append(_cut(str(rec.error), MAX_TOOLTIP))
    return "\n".join(lines)


def _attempt_status(rec: StepRecord, error: StepError | None, last: bool, ended: bool) -> str:
    if error is not None:
        if error.type in ("CancelledError", "WorkerLost") or (last and rec.status == "cancelled"):
            return "cancelled"
        return "failed"
    if not ended:
        return "running"
    if last and rec.status in ("failed", "cancelled"):
        return rec.status
    return "succeeded"


def _record_bars(rec: StepRecord, at: _At, fallback_end: float, critical: bool) -> list[Bar]:
    """Queue wait, attempts and the waits between retries of one step or item."""
    bars: list[Bar] = []
    attempts = sorted(rec.attempts, key=lambda a: a.number)
    first_start = at(attempts[0].started_at) if attempts else at(rec.started_at)
    queued = at(rec.queued_at)
    if queued is not None:
        wait_end = first_start if first_start is not None else (at(rec.finished_at) or fallback_end)
        if wait_end > queued:
            never = first_start is None
            bars.append(
                Bar(
                    queued,
                    wait_end,
                    "wait",
                    rec.status if never else "queued",
                    title=f"{rec.step_id}: queued {format_seconds(wait_end - queued)}"
                    + (f", then {rec.status}" if never else ""),
                )
            )
    multi = len(attempts) > 1
    prev_end: float | None = None
    fallback_worker = _process(_worker_of(rec))
    for i, a in enumerate(attempts):
        worker = _process(a.worker) if a.worker else fallback_worker
        if i == 0 and bars:  # the queue wait goes with the first attempt
            bars[-1].worker = worker
        start = at(a.started_at) or 0.0
        end = at(a.finished_at)
        if end is None and a.duration is not None:
            end = start + a.duration
        ended = end is not None
        end = end if end is not None else max(fallback_end, start)
        last = i == len(attempts) - 1
        status = _attempt_status(rec, a.error, last, ended)
        if prev_end is not None and start > prev_end:
            bars.append(
                Bar(
                    prev_end,
                    start,
                    "retry",
                    "failed",
                    title=f"{rec.step_id}: {format_seconds(start - prev_end)} "
                    f"before attempt {a.number} (backoff and queue)",
                    worker=worker,
                )
            )
        took = format_seconds(a.duration if a.duration is not None else end - start)
        text = f"#{a.number} · {took}" if multi else took
        if status == "failed":
            text = "✕ " + text
        tip = [f"{rec.step_id} attempt {a.number}: {status}, {took}"]
        tip.append(f"tool {rec.tool}")
        if a.worker:
            tip.append(f"worker {a.worker}")
        tip.append(f"from +{format_seconds(start)} to +{format_seconds(end)}")
        if a.error is not None:
            tip.append(_cut(str(a.error), MAX_TOOLTIP))
        bars.append(Bar(start, end, "attempt", status, text, "\n".join(tip), critical, worker))
        prev_end = end
    if not attempts and rec.started_at is not None and rec.items is None:
        start = at(rec.started_at) or 0.0
        end = at(rec.finished_at)
        length = end - start if end is not None else max(fallback_end - start, 0.0)
        bars.append(
            Bar(
                start,
                start + length,
                "attempt",
                rec.status if end is not None else "running",
                format_seconds(length),
                f"{rec.step_id}: {rec.status}, {format_seconds(length)}",
                critical,
            )
        )
    return bars


def _map_rows(rec: StepRecord, at: _At, fallback_end: float, critical: bool) -> list[Row]:
    """A map step's row (from its first item's start to its last one's end), then a row
    per item, or with many items the items packed into at most `MAX_LANES` rows."""
    row = Row(rec.step_id, rec.tool, rec.status, rec.step_id, critical=critical)
    row.title = _row_title(rec)
    items = rec.items or []
    start, end = at(rec.started_at), at(rec.finished_at)
    queued = at(rec.queued_at)
    if queued is not None and start is not None and start > queued:
        row.bars.append(Bar(queued, start, "wait", "queued", title=f"{rec.step_id}: queued"))
    n = len(items)
    if start is not None:
        stop = end if end is not None else fallback_end
        row.bars.append(
            Bar(
                start,
                stop,
                "span",
                rec.status if end is not None else "running",
                f"{n} item{'s' if n != 1 else ''} · {format_seconds(stop - start)}",
                f"{rec.step_id}: map of {n} items, {rec.status}, {format_seconds(stop - start)}",
                critical,
            )
        )
    rows = [row]
    item_bars = [(i, _record_bars(child, at, fallback_end, False)) for i, child in enumerate(items)]
    if n <= MAX_ITEM_ROWS:
        for (i, bars), child in zip(item_bars, items, strict=True):
            r = Row(f"[{i}]", "", child.status, rec.step_id, bars, item=True)
            r.title = _row_title(child)
            rows.append(r)
        return rows
    # Many items: pack their attempts (queue waits left out: items are queued together)
    # into shared rows, first fit in start order.
    lanes: list[tuple[float, Row]] = []
    hidden = 0
    packed = [(i, [b for b in bars if b.kind != "wait"]) for i, bars in item_bars]
    for i, bars in sorted(
        (p for p in packed if p[1]), key=lambda p: (min(b.start for b in p[1]), p[0])
    ):
        lo, hi = min(b.start for b in bars), max(b.end for b in bars)
        for bar in bars:
            if bar.kind == "attempt":
                bar.text = f"[{i}]"
                bar.title = f"item {i}: " + bar.title
        for k, (free_at, lane) in enumerate(lanes):
            if free_at <= lo:
                lane.bars.extend(bars)
                lanes[k] = (hi, lane)
                break
        else:
            if len(lanes) >= MAX_LANES:
                hidden += 1
                continue
            label = f"{n} items" if not lanes else ""
            lanes.append((hi, Row(label, "", rec.status, rec.step_id, list(bars), item=True)))
    for _, lane in lanes:
        lane.title = f"{rec.step_id}: {n} items, packed into {len(lanes)} rows"
    rows.extend(lane for _, lane in lanes)
    if hidden:
        row.title += f"\n{hidden} items not drawn (more than {MAX_LANES} rows)"
        rows[-1].label = f"+{hidden} not drawn"
    return rows


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# SVG -------------------------------------------------------------------------------------
def _ticks(span: float) -> tuple[float, list[float]]:
    raw = span / 8
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = int(span / step + 1e-9)
    return step, [k * step for k in range(n + 1)]


def _tick_label(t: float, step: float) -> str:
    if t == 0:
        return "0"
    if step >= 1:
        return f"{t:g} s" if t < 60 else f"{int(t // 60)}m {t % 60:02.0f}s"
    if step >= 0.001:
        return f"{t * 1000:g} ms" if t < 1 else f"{t:.3g} s"
    return f"{t * 1e6:.0f} µs"
