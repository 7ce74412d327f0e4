"""Run events: what happened to which step when, readable while the run goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RunEvent:
    """A step changed status (`step_id` set), or the run finished (`step_id` None).

    `status` is the new step status, or the run status on the run's last event.
    """

    run_id: str
    step_id: str | None
    status: str
    at: datetime
    attempt: int | None = None
    error: str | None = None
    worker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        d = asdict(self)
        d["at"] = self.at.isoformat()
        return d


class EventLog:
    """An append-only list of events that readers in other threads can follow."""

    def __init__(self) -> None:
        self._events: list[RunEvent] = []
        self._closed = False
        self._cond = threading.Condition()

    def append(self, event: RunEvent) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def close(self) -> None:
        """No more events will come; followers stop after the last one."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def follow(self, timeout: float | None = None) -> Iterator[RunEvent]:
        """Every event from the first, blocking for new ones until closed.

        Raises:
            TimeoutError: `timeout` seconds passed before the log closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        index = 0
        while True:
            with self._cond:
                while index >= len(self._events) and not self._closed:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError("no run end within the timeout")
                    self._cond.wait(left)
                batch = self._events[index:]
                closed = self._closed
            index += len(batch)
            yield from batch
            if closed and index >= len(self._events):
                return
