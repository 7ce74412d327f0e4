"""Run events: what happened to which step when, readable while the run goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
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


# What the log stores: (step_id, status, at as an epoch float, attempt, error). Building
# a RunEvent (and its datetime) only when someone reads keeps recording cheap on the
# embedded backend's hot path.
_Entry = tuple[str | None, str, float, int | None, str | None]


class EventLog:
    """An append-only list of one run's events that readers in other threads can follow."""

    def __init__(self, run_id: str, worker: str | None = None) -> None:
        self.run_id = run_id
        self.worker = worker
        self._events: list[_Entry] = []
        self._closed = False
        self._cond = threading.Condition()
        self._waiting = 0  # followers blocked in wait(); appends skip the lock when none

    def add(
        self,
        step_id: str | None,
        status: str,
        at: float,
        attempt: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record an event (`step_id` None: the run's final one) that happened at `at`
        (`time.time()`)."""
        # list.append is atomic; take the lock only to wake a follower. A follower counts
        # itself as waiting before it re-checks the length, so no append is missed.
        self._events.append((step_id, status, at, attempt, error))
        if self._waiting:
            with self._cond:
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
                    self._waiting += 1
                    try:
                        if index >= len(self._events):
                            self._cond.wait(left)
                    finally:
                        self._waiting -= 1
                batch = self._events[index:]
                closed = self._closed
            index += len(batch)
            for sid, status, at, attempt, error in batch:
                worker = self.worker if sid is not None else None
                when = datetime.fromtimestamp(at, UTC)
                yield RunEvent(self.run_id, sid, status, when, attempt, error, worker)
            if closed and index >= len(self._events):
                return
