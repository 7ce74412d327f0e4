"""What a run recorded: statuses, per-step records with timing, the run's timing analysis.

`RunRecord` (in `executor.result`) is this record with what users do with it:
raise on failure, draw the timeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, computed_field

StepStatus = Literal[
    "pending",
    "queued",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "upstream_failed",
    "cancelled",
]
RunStatus = Literal["pending", "running", "succeeded", "failed", "cancelled", "timed_out"]
TERMINAL_STEP: frozenset[str] = frozenset(
    {"succeeded", "failed", "skipped", "upstream_failed", "cancelled"}
)
TERMINAL_RUN: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


class StepError(BaseModel):
    """Why an attempt or a step failed."""

    type: str
    message: str
    traceback: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException, traceback: str | None = None) -> StepError:
        """Describe an exception; `type` is its class name, qualified unless builtin."""
        t = type(exc)
        name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
        return cls(type=name, message=str(exc) or name, traceback=traceback)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


class Attempt(BaseModel):
    """One try of a step (or of one map item)."""

    number: int
    started_at: datetime
    finished_at: datetime | None = None
    duration: float | None = None
    worker: str | None = None
    error: StepError | None = None


class StepRecord(BaseModel):
    """Everything about one step of a run. `duration` spans first start to final end."""

    model_config = ConfigDict(validate_assignment=False)

    step_id: str
    tool: str
    status: StepStatus = "pending"
    inputs: Any = None
    output: Any = None
    error: StepError | None = None
    attempts: list[Attempt] = []
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: float | None = None
    queue_wait: float | None = None
    worker: str | None = None
    items: list[StepRecord] | None = None

    @property
    def run_time(self) -> float:
        """Seconds of work: the sum of a map step's items, else the step's duration."""
        if self.items:
            return sum(i.duration or 0.0 for i in self.items)
        return self.duration or 0.0


class RunRecord(BaseModel):
    """The outcome of a run: status, output, every step's record, where time went."""

    run_id: str
    flow_name: str
    flow_version: str
    status: RunStatus
    inputs: Any = None
    output: Any = None
    error: str | None = None
    steps: dict[str, StepRecord] = {}
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_time: float | None = None
    step_time: float = 0.0
    critical_path: list[str] = []
    critical_path_time: float = 0.0
    parallelism: float | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def succeeded(self) -> bool:
        """Whether the run finished with status `succeeded`."""
        return self.status == "succeeded"

    def failed_steps(self) -> list[StepRecord]:
        """Records of steps whose own tool call failed."""
        return [r for r in self.steps.values() if r.status == "failed"]


R = TypeVar("R", bound=RunRecord)


def critical_path(
    records: Mapping[str, StepRecord], deps: Mapping[str, tuple[str, ...]], order: list[str]
) -> tuple[list[str], float]:
    """The chain of dependencies with the most step time, and that time.

    Args:
        order: step ids in topological order.
    """
    best: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    for sid in order:
        rec = records.get(sid)
        own = rec.duration or 0.0 if rec is not None else 0.0
        before, via = 0.0, None
        for d in deps.get(sid, ()):
            if best[d] > before or (via is None and best[d] >= before):
                before, via = best[d], d
        best[sid] = before + own
        prev[sid] = via
    if not best:
        return [], 0.0
    end = max(best, key=lambda s: best[s])
    path: list[str] = []
    node: str | None = end
    while node is not None:
        path.append(node)
        node = prev[node]
    path.reverse()
    # Steps that took no time (skipped, never ran) say nothing about where time went.
    path = [s for s in path if (records[s].duration or 0.0) > 0 or s == end]
    return path, best[end]


def summarize(result: R, deps: Mapping[str, tuple[str, ...]], order: list[str]) -> R:
    """Fill `step_time`, `critical_path`, `critical_path_time` and `parallelism`."""
    result.step_time = sum(r.run_time for r in result.steps.values())
    result.critical_path, result.critical_path_time = critical_path(result.steps, deps, order)
    if result.wall_time:
        result.parallelism = result.step_time / result.wall_time
    return result
