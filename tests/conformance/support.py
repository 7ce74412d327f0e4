"""Small helpers shared by the conformance tests (no fixtures here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from executor import ExecutionResult, Flow, Step, StepRecord

from .tools import read_lines


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, every: float = 0.01) -> bool:
    """Poll until `predicate()` is true; False if `timeout` seconds passed first."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def marker_says(path: str, word: str, timeout: float = 5.0) -> bool:
    """Whether a tool's marker file gets the line `word` (within `timeout`)."""
    return wait_until(lambda: word in read_lines(path), timeout)


def gap(earlier: datetime | None, later: datetime | None) -> float:
    """Seconds from `earlier` to `later` (both must be set)."""
    assert earlier is not None and later is not None
    return (later - earlier).total_seconds()


def statuses(result: ExecutionResult) -> dict[str, str]:
    return {sid: rec.status for sid, rec in result.steps.items()}


def intervals(records: list[StepRecord]) -> list[tuple[datetime, datetime]]:
    """The (start, end) of every attempt of these records, sorted by start."""
    spans = []
    for rec in records:
        for a in rec.attempts:
            assert a.finished_at is not None
            spans.append((a.started_at, a.finished_at))
    return sorted(spans)


def wide_fan(n: int, leaf: Step) -> Flow:
    """root -> n leaves (`leaf` with id w{i}, its `value` input set to i) -> join."""
    leaves = [
        leaf.model_copy(update={"id": f"w{i}", "inputs": {**leaf.inputs, "value": i}})
        for i in range(n)
    ]
    return Flow(
        name="wide-fan",
        steps=[
            Step(id="root", tool="echo", inputs={"value": 0}),
            *[s.model_copy(update={"depends_on": ["root"]}) for s in leaves],
            Step(id="join", tool="total", inputs={"values": [f"$steps.w{i}" for i in range(n)]}),
        ],
        output="$steps.join",
    )
