"""What a running tool can learn about the call it serves: `current_step()`.

Both backends set it around every tool call (each attempt, each map item); a sync
tool's thread gets a copy of it. Outside a call it is None, so a tool that is also a
plain function keeps working when called directly.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class StepContext:
    """The call a tool is serving.

    Attributes:
        run_id: the run's id.
        flow: the flow's name.
        step_id: the step (for a map item, the map step; see `item`).
        attempt: 1 for the first attempt, 2 for the first retry, ...
        item: the map item's index, None outside a map step.
        worker: who runs the call (`host:pid` embedded; the worker process distributed).
        deadline: when the attempt's timeout ends (aware UTC), None without a timeout.
    """

    run_id: str
    flow: str
    step_id: str
    attempt: int = 1
    item: int | None = None
    worker: str = ""
    deadline: datetime | None = None

    def remaining(self) -> float | None:
        """Seconds left before the attempt's timeout (None: no timeout; may be < 0)."""
        if self.deadline is None:
            return None
        return (self.deadline - datetime.now(UTC)).total_seconds()

    def for_attempt(self, number: int, timeout: float | None) -> StepContext:
        """This context for attempt `number`, starting now, with its deadline."""
        deadline = None
        if timeout is not None:
            deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        return replace(self, attempt=number, deadline=deadline)


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "dagrelay_tool_call", default=None
)


def current_step() -> StepContext | None:
    """The call the running tool serves (None outside a dagrelay tool call).

    ```python
    @tool
    def fetch(url: str) -> str:
        step = current_step()
        log.info("attempt %s of %s", step.attempt, step.step_id)
    ```
    """
    return _current.get()


@contextmanager
def serving(context: StepContext | None) -> Iterator[None]:
    """`current_step()` is `context` inside (nothing changes for None)."""
    if context is None:
        yield
        return
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)
