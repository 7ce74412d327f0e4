"""Runs as rich text for a terminal: step table, summary, status line, events, recent runs.

Also where a failure happened (`failures`, `failure_place`), for the page as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from executor.run.events import RunEvent
from executor.run.records import TERMINAL_RUN, TERMINAL_STEP, RunRecord, StepError, StepRecord
from executor.views.format import format_age, format_seconds

STATUS_STYLES: dict[str, str] = {
    "succeeded": "green",
    "failed": "bold red",
    "upstream_failed": "red",
    "cancelled": "yellow",
    "timed_out": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "queued": "blue",
    "pending": "dim",
}
MAX_ITEM_ROWS = 10  # map items listed under their step; the rest are counted
MAX_OUTPUT_CHARS = 2000
MAX_ERROR_PANELS = 10  # failed steps shown in full; the rest are counted
MAX_RETRY_NOTES = 10  # attempts that failed and were retried, one line each
MAX_TRACEBACK_LINES = 30  # the end of a traceback (where it was raised) is kept
MAX_MESSAGE_CHARS = 4000
WIDE = 110  # narrower consoles drop the worker column when one worker did everything


def status_text(status: str) -> Text:
    """A status word in its colour."""
    return Text(status, style=STATUS_STYLES.get(status, ""))


def step_table(result: RunRecord, *, items: bool = True, show_worker: bool = True) -> Table:
    """One row per step (in flow order), plus up to `MAX_ITEM_ROWS` rows per map step.

    Args:
        items: list map items (`[0]`, `[1]`...) under their step.
        show_worker: include the worker column.
    """
    table = Table(
        title=Text(f"{result.flow_name} v{result.flow_version}", style="bold"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("step", overflow="fold", min_width=4)
    table.add_column("tool", overflow="fold", min_width=4)
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right", overflow="fold")
    table.add_column("queue wait", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    if show_worker:
        table.add_column("worker", overflow="fold", min_width=6)
    table.add_column("error", overflow="fold", min_width=10)
    for rec in result.steps.values():
        table.add_row(*_row(rec, Text(rec.step_id), show_worker))
        if items and rec.items:
            for i, child in enumerate(rec.items[:MAX_ITEM_ROWS]):
                table.add_row(*_row(child, Text(f"  [{i}]", style="dim"), show_worker))
            hidden = len(rec.items) - MAX_ITEM_ROWS
            if hidden > 0:
                table.add_row(Text(f"  … {hidden} more items", style="dim"))
    return table


def _row(rec: StepRecord, name: Text, show_worker: bool) -> list[RenderableType]:
    attempts: RenderableType
    if rec.items is not None:  # a map step: its items by status (their tries are theirs)
        attempts = counts_text(rec.items, "items") if rec.items else Text("0 items")
    else:
        attempts = str(len(rec.attempts)) if rec.attempts else "-"
    error = Text(_first_line(str(rec.error)), style="red") if rec.error else Text("")
    row: list[RenderableType] = [
        name,
        Text(rec.tool),
        status_text(rec.status),
        attempts,
        format_seconds(rec.queue_wait),
        format_seconds(rec.duration),
    ]
    if show_worker:
        row.append(Text(step_worker(rec) or "-"))
    row.append(error)
    return row


def workers(result: RunRecord) -> list[str]:
    """Every worker any step of the run ran on, sorted."""
    found = set()
    for rec in result.steps.values():
        for r in [rec, *(rec.items or ())]:
            w = step_worker(r)
            if w and not w.endswith(" workers"):
                found.add(w)
    return sorted(found)


def step_worker(rec: StepRecord) -> str | None:
    """Where a step ran: its own `worker`, else its last attempt's, else its items'."""
    if rec.worker:
        return rec.worker
    for attempt in reversed(rec.attempts):
        if attempt.worker:
            return attempt.worker
    if rec.items:
        workers = sorted({w for w in (step_worker(c) for c in rec.items) if w})
        if len(workers) == 1:
            return workers[0]
        if workers:
            return f"{len(workers)} workers"
    return None


def summary_text(result: RunRecord) -> Text:
    """One line: status, wall time, step time, critical path (time and steps), parallelism."""
    text = Text()
    text.append(result.status, style=STATUS_STYLES.get(result.status, "") + " bold")
    if result.wall_time is None and result.started_at is not None:  # still going
        elapsed = (datetime.now(UTC) - result.started_at).total_seconds()
        text.append(f" for {format_seconds(max(elapsed, 0.0))}")
    else:
        text.append(f" in {format_seconds(result.wall_time)}")
    text.append(f" · step time {format_seconds(result.step_time)}")
    text.append(f" · critical path {format_seconds(result.critical_path_time)}")
    if result.critical_path:
        text.append(" (" + " → ".join(result.critical_path) + ")", style="dim")
    if result.parallelism is not None:
        text.append(f" · parallelism {result.parallelism:.2f}x")
    text.append(f" · run {result.run_id}", style="dim")
    return text


def output_text(result: RunRecord) -> Text | None:
    """The run's output as indented JSON (cut to a readable size), or None if it has none."""
    if result.output is None:
        return None
    body = json.dumps(result.output, indent=2, ensure_ascii=False, default=str)
    if len(body) > MAX_OUTPUT_CHARS:
        body = body[:MAX_OUTPUT_CHARS] + f"\n… ({len(body) - MAX_OUTPUT_CHARS} more characters)"
    return Text("output: ", style="bold") + Text(body)


def print_run_report(console: Console, result: RunRecord) -> None:
    """Everything `dagrelay run` prints at the end: the step table, output and summary.

    On a narrow console a run that used a single worker names it in the summary instead
    of a column. The output and summary are printed unwrapped (`soft_wrap`) so that
    piped text keeps its lines whole.
    """
    used = workers(result)
    show_worker = console.width >= WIDE or len(used) > 1
    console.print(step_table(result, show_worker=show_worker))
    for renderable in error_report(result):
        console.print(renderable, soft_wrap=isinstance(renderable, Text))
    out = output_text(result)
    if out is not None:
        console.print(out, soft_wrap=True)
    summary = summary_text(result)
    if not show_worker and used:
        summary.append(f" · worker {used[0]}", style="dim")
    console.print(summary, soft_wrap=True)


Failure = tuple[StepRecord, int | None, StepError, bool]


def failures(result: RunRecord) -> list[Failure]:
    """Every error worth reading, as (record, attempt number, error, final).

    `final` errors failed their step (first, in flow order); the others are attempts
    that a retry recovered from. A failed map step stands for its failed items (its error
    names the first one and carries its traceback); retried items are listed as items.
    """
    final: list[Failure] = []
    retried: list[Failure] = []
    for rec in result.steps.values():
        if rec.status == "failed" and rec.error is not None:
            last = max((a.number for a in rec.attempts), default=None)
            final.append((rec, last, rec.error, True))
        for r in [rec, *(rec.items or ())]:
            attempts = sorted(r.attempts, key=lambda a: a.number)
            if r.status in ("failed", "cancelled"):
                attempts = attempts[:-1]  # the last one is the step's own error
            for a in attempts:
                if a.error is not None and a.error.type != "CancelledError":
                    retried.append((r, a.number, a.error, False))
    return final + retried


def failure_place(rec: StepRecord, number: int | None) -> list[str]:
    """Where an attempt failed: its tool, attempt number (of how many) and worker."""
    where = [f"tool {rec.tool}"]
    if number is not None:
        total = len(rec.attempts)
        where.append(f"attempt {number} of {total}" if total > 1 else f"attempt {number}")
    worker = next((a.worker for a in rec.attempts if a.number == number), None) or rec.worker
    if worker:
        where.append(f"worker {worker}")
    return where


def error_panel(rec: StepRecord, number: int | None, error: StepError) -> Panel:
    """A failed step as people need it: where (tool, attempt, worker), the exception's
    type and message, and the end of the traceback from the worker."""
    title = Text("✗ ", style="bold red")
    title.append(rec.step_id, style="bold")
    title.append(" failed", style="bold red")
    title.append(" · " + " · ".join(failure_place(rec, number)), style="dim")
    body = Text()
    body.append(error.type, style="bold red")
    message = error.message
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + f" … ({len(error.message)} characters)"
    body.append(": " + message)
    parts: list[RenderableType] = [body]
    if error.traceback:
        lines, _ = tool_frames(error.traceback)
        shown = lines[-MAX_TRACEBACK_LINES:]
        tb = Text()
        if len(lines) > len(shown):
            tb.append(f"… {len(lines) - len(shown)} earlier lines\n", style="dim italic")
        tb.append("\n".join(shown), style="dim")
        parts += [Text(""), tb]
    return Panel(
        Group(*parts),
        title=title,
        title_align="left",
        border_style="red",
        box=box.ROUNDED,
        expand=True,
    )


# Frames every tool call goes through (paths as on the worker that ran it).
_INTERNAL = re.compile(
    r'^  File ".*?(?:/executor/attempts\.py|/executor/backends/local\.py'
    r'|/workers/runtime\.py|/asyncio/[a-z_]+\.py|/concurrent/futures/[a-z_]+\.py)", '
)


def tool_frames(traceback: str) -> tuple[list[str], int]:
    """A traceback's lines without the frames of dagrelay and asyncio that come before
    the tool's own (in each chained block); and how many frames were left out."""
    out: list[str] = []
    hidden = block = 0  # frames left out: in all, in this block's leading run
    leading = False  # inside the leading internal frames of a block
    skipping = False  # inside one internal frame (its source and caret lines)
    for line in traceback.rstrip().splitlines():
        if line.startswith("Traceback (most recent call last):"):
            leading, skipping, block = True, False, 0
            out.append(line)
            continue
        if skipping and line.startswith("    "):
            continue
        if leading and _INTERNAL.match(line):
            hidden += 1
            block += 1
            skipping = True
            continue
        if block:
            out.append(f"  … {block} frame{'s' if block != 1 else ''} of dagrelay and asyncio")
        leading = skipping = False
        block = 0
        out.append(line)
    return out, hidden


def error_report(result: RunRecord) -> list[RenderableType]:
    """Panels for the steps that failed, then one line per attempt a retry recovered."""
    found = failures(result)
    final = [f for f in found if f[3]]
    retried = [f for f in found if not f[3]]
    out: list[RenderableType] = [
        error_panel(rec, number, error) for rec, number, error, _ in final[:MAX_ERROR_PANELS]
    ]
    if len(final) > MAX_ERROR_PANELS:
        out.append(Text(f"… {len(final) - MAX_ERROR_PANELS} more failed steps", style="red"))
    for rec, number, error, _ in retried[:MAX_RETRY_NOTES]:
        note = Text("retried: ", style="yellow")
        note.append(f"{rec.step_id} attempt {number} failed: ")
        note.append(_first_line(str(error)), style="dim")
        out.append(note)
    if len(retried) > MAX_RETRY_NOTES:
        out.append(Text(f"… {len(retried) - MAX_RETRY_NOTES} more retried attempts", style="dim"))
    return out


def steps_done(result: RunRecord) -> tuple[int, int, int]:
    """How many of the run's steps are finished, running, and how many there are."""
    statuses = [rec.status for rec in result.steps.values()]
    done = sum(s in TERMINAL_STEP for s in statuses)
    return done, sum(s == "running" for s in statuses), len(statuses)


# The order statuses are counted in: how far a step got, best first.
STEP_ORDER = (
    "succeeded",
    "failed",
    "upstream_failed",
    "cancelled",
    "skipped",
    "running",
    "queued",
    "pending",
)


def status_counts(records: Sequence[StepRecord]) -> list[tuple[str, int]]:
    """(status, how many) of the records that have it, in `STEP_ORDER`."""
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.status] = counts.get(rec.status, 0) + 1
    order = {s: i for i, s in enumerate(STEP_ORDER)}
    return sorted(counts.items(), key=lambda p: (order.get(p[0], len(order)), p[0]))


def counts_text(records: Sequence[StepRecord], noun: str = "steps") -> Text:
    """`5 steps: 3 succeeded, 1 failed, 1 cancelled`, each count in its colour."""
    text = Text(f"{len(records)} {noun}" + (": " if records else ""))
    for i, (status, n) in enumerate(status_counts(records)):
        if i:
            text.append(", ")
        text.append(f"{n} ")
        text.append_text(status_text(status))
    return text


def status_line(result: RunRecord, now: datetime | None = None) -> Text:
    """One line about a run: id, flow, status, its steps by status, time, its error."""
    text = Text(result.run_id)
    text.append(f"  {result.flow_name} v{result.flow_version}  ")
    text.append_text(status_text(result.status))
    text.append("  ")
    text.append_text(counts_text(list(result.steps.values())))
    if result.status in TERMINAL_RUN:
        text.append(f"  in {format_seconds(result.wall_time)}")
    elif result.started_at is not None:
        elapsed = ((now or datetime.now(UTC)) - result.started_at).total_seconds()
        text.append(f"  for {format_seconds(max(elapsed, 0.0))}")
    if result.error:
        text.append(f"  {_first_line(result.error)}", style="red")
    return text


def event_line(event: RunEvent) -> Text:
    """One event as a line: local time, step (attempt), status, worker, error."""
    text = Text(event.at.astimezone().strftime("%H:%M:%S.%f")[:-3] + "  ", style="dim")
    if event.step_id is None:
        text.append("run ", style="bold")
        text.append_text(status_text(event.status))
    else:
        text.append(event.step_id)
        if event.attempt is not None:
            text.append(f" #{event.attempt}", style="dim")
        text.append(" ")
        text.append_text(status_text(event.status))
        if event.worker:
            text.append(f"  {event.worker}", style="dim")
    if event.error:
        text.append(f"  {_first_line(event.error)}", style="red")
    return text


def runs_table(runs: Sequence[tuple[str, Mapping[str, str]]], now: datetime | None = None) -> Table:
    """Recent runs (as `FlowExecutor.list_runs` returns them), one row each."""
    now = now or datetime.now(UTC)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("run", no_wrap=True)
    table.add_column("flow", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("submitted", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    table.add_column("wall time", justify="right", no_wrap=True)
    for run_id, info in runs:
        submitted, age = "-", "-"
        when = _parse_time(info.get("submitted_at"))
        if when is not None:
            submitted = when.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            age = format_age((now - when).total_seconds())
        wall = info.get("wall_time")
        table.add_row(
            run_id,
            Text(info.get("flow_name", "?")),
            status_text(info.get("status", "?")),
            submitted,
            age,
            format_seconds(float(wall)) if wall else "-",
        )
    return table


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
