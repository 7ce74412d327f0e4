"""Watching a run as it goes: a live progress display fed by the run's events.

On a terminal: a progress bar of steps done out of all, with how many are running,
queued and failed and the time since the run started; with `lines=True` each event is
also printed above the bar. Not on a terminal (piped, in CI, a log file): no bar and no
control codes, only the event lines (if asked for) — one per event, as they come.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
)
from rich.text import Text

from executor.handle import RunHandle
from executor.run.events import RunEvent
from executor.run.records import TERMINAL_STEP
from executor.views.format import format_seconds
from executor.views.report import event_line


class Counts:
    """Step statuses as the events tell them (map items are left to their step)."""

    def __init__(self, steps: Iterable[str], statuses: dict[str, str] | None = None) -> None:
        self.steps = set(steps)
        self.status: dict[str, str] = dict(statuses or {})

    def update(self, event: RunEvent) -> bool:
        """Take an event in; False if it is not about one of the steps."""
        if event.step_id is None or event.step_id not in self.steps:
            return False
        self.status[event.step_id] = "running" if event.status == "retrying" else event.status
        return True

    def count(self, *statuses: str) -> int:
        return sum(s in statuses for s in self.status.values())

    @property
    def done(self) -> int:
        return sum(s in TERMINAL_STEP for s in self.status.values())

    def fields(self) -> dict[str, int]:
        return {
            "running": self.count("running"),
            "queued": self.count("queued"),
            "failed": self.count("failed", "upstream_failed"),
        }


class SinceColumn(ProgressColumn):
    """Time since the run started (not since we started watching it)."""

    def __init__(self, started: datetime | None) -> None:
        super().__init__()
        self.started = started

    def render(self, task: Task) -> Text:
        if self.started is None:
            seconds = task.elapsed or 0.0
        else:
            seconds = max((datetime.now(UTC) - self.started).total_seconds(), 0.0)
        return Text(format_seconds(seconds) if seconds else "0 s", style="progress.elapsed")


def watch(
    handle: RunHandle,
    console: Console,
    title: str,
    steps: Iterable[str],
    *,
    lines: bool = False,
    started: datetime | None = None,
    statuses: dict[str, str] | None = None,
) -> None:
    """Follow the run's events until its final one.

    Args:
        title: what the bar is about (the flow's name); shown as plain text.
        steps: the run's step ids (what the bar counts).
        lines: print every event as a line (above the bar on a terminal).
        started: when the run started, for the elapsed time (default: now).
        statuses: step statuses known already (attaching to a run under way).
    """
    counts = Counts(steps, statuses)
    if not console.is_terminal:
        for event in handle.events():
            if lines:
                console.print(event_line(event), soft_wrap=True)
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "running {task.fields[running]} · queued {task.fields[queued]} · "
            "failed {task.fields[failed]}"
        ),
        SinceColumn(started),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        f = counts.fields()
        task = progress.add_task(
            escape(title),
            total=len(counts.steps),
            completed=counts.done,
            running=f["running"],
            queued=f["queued"],
            failed=f["failed"],
        )
        for event in handle.events():
            if lines:
                progress.console.print(event_line(event), soft_wrap=True)
            if event.step_id is None:
                break
            if counts.update(event):
                f = counts.fields()
                progress.update(
                    task,
                    completed=counts.done,
                    running=f["running"],
                    queued=f["queued"],
                    failed=f["failed"],
                )


__all__ = ["Counts", "watch"]
