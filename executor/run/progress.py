"""Plain mutable records of a step while it runs; the pydantic `StepRecord` is built once.

Building a pydantic model, or setting one of its fields, costs microseconds; a step sets
a dozen fields while it runs, and the embedded backend runs tens of thousands of steps a
second. So running code fills these slotted records, with epoch floats (`time.time()`)
for timestamps, and `to_record()` turns them into the public models at the end (or for a
live snapshot). The field names and meanings are those of `StepRecord` and `Attempt`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from executor.run.records import Attempt, StepError, StepRecord, StepStatus


def _epoch(t: datetime | None) -> float | None:
    return None if t is None else t.timestamp()


def to_datetime(t: float | None) -> datetime | None:
    """An epoch float as the aware UTC datetime `datetime.now(UTC)` would have given."""
    return None if t is None else datetime.fromtimestamp(t, UTC)


class AttemptProgress:
    """One try of a step while it runs (see `Attempt`)."""

    __slots__ = ("duration", "error", "finished_at", "number", "started_at", "worker")

    def __init__(self, number: int, started_at: float, worker: str | None) -> None:
        self.number = number
        self.started_at = started_at
        self.finished_at: float | None = None
        self.duration: float | None = None
        self.worker = worker
        self.error: StepError | None = None

    @classmethod
    def from_attempt(cls, attempt: Attempt) -> AttemptProgress:
        """An earlier run's attempt, as it was (a rerun keeps them)."""
        made = cls(attempt.number, _epoch(attempt.started_at) or 0.0, attempt.worker)
        made.finished_at = _epoch(attempt.finished_at)
        made.duration = attempt.duration
        made.error = attempt.error
        return made

    def to_dict(self) -> dict[str, Any]:
        """The fields of the `Attempt` this becomes."""
        return {
            "number": self.number,
            "started_at": to_datetime(self.started_at),
            "finished_at": to_datetime(self.finished_at),
            "duration": self.duration,
            "worker": self.worker,
            "error": self.error,
        }


class StepProgress:
    """Everything about one step while it runs (see `StepRecord`)."""

    __slots__ = (
        "attempts",
        "duration",
        "error",
        "finished_at",
        "inputs",
        "items",
        "output",
        "queue_wait",
        "queued_at",
        "started_at",
        "status",
        "step_id",
        "tool",
        "worker",
    )

    def __init__(self, step_id: str, tool: str) -> None:
        self.step_id = step_id
        self.tool = tool
        self.status: StepStatus = "pending"
        self.inputs: Any = None
        self.output: Any = None
        self.error: StepError | None = None
        self.attempts: list[AttemptProgress] = []
        self.queued_at: float | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.duration: float | None = None
        self.queue_wait: float | None = None
        self.worker: str | None = None
        self.items: list[StepProgress] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields of the `StepRecord` this becomes (nested records as dicts too)."""
        attempts = [a.to_dict() for a in self.attempts]
        # A step starts with its first attempt and mostly ends with its last: the same
        # instants, so reuse their datetimes rather than convert again.
        started = finished = None
        if attempts:
            if self.started_at == self.attempts[0].started_at:
                started = attempts[0]["started_at"]
            if self.finished_at == self.attempts[-1].finished_at:
                finished = attempts[-1]["finished_at"]
        return {
            "step_id": self.step_id,
            "tool": self.tool,
            "status": self.status,
            "inputs": self.inputs,
            "output": self.output,
            "error": self.error,
            "attempts": attempts,
            "queued_at": to_datetime(self.queued_at),
            "started_at": started or to_datetime(self.started_at),
            "finished_at": finished or to_datetime(self.finished_at),
            "duration": self.duration,
            "queue_wait": self.queue_wait,
            "worker": self.worker,
            "items": None if self.items is None else [i.to_dict() for i in self.items],
        }

    @classmethod
    def from_record(cls, rec: StepRecord) -> StepProgress:
        """A finished record as progress again: a rerun's reused step, as it ended."""
        made = cls(rec.step_id, rec.tool)
        made.status = rec.status
        made.inputs, made.output, made.error = rec.inputs, rec.output, rec.error
        made.attempts = [AttemptProgress.from_attempt(a) for a in rec.attempts]
        made.queued_at = _epoch(rec.queued_at)
        made.started_at = _epoch(rec.started_at)
        made.finished_at = _epoch(rec.finished_at)
        made.duration, made.queue_wait, made.worker = rec.duration, rec.queue_wait, rec.worker
        if rec.items is not None:
            made.items = [cls.from_record(i) for i in rec.items]
        return made

    def to_record(self) -> StepRecord:
        """The public record, validated in one go (nested attempts and items included)."""
        return StepRecord.model_validate(self.to_dict())

    def fill(self, rec: StepRecord) -> None:
        """Copy this progress into an existing record (the caller holds on to it)."""
        built = self.to_record()
        for name in StepRecord.model_fields:
            setattr(rec, name, getattr(built, name))
