"""`RunHandle`: a submitted run, from the process that submitted it or any other."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from executor.result import ExecutionResult
from executor.run.events import RunEvent
from executor.run.records import RunStatus


class RunHandle(ABC):
    """A run in progress or finished; returned by `FlowExecutor.submit` and `get_run`."""

    run_id: str

    @abstractmethod
    def status(self) -> RunStatus:
        """`pending`, `running`, or the final status."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> ExecutionResult:
        """Block until the run finishes and return its result.

        Raises:
            TimeoutError: the run did not finish within `timeout` seconds (it goes on).
        """

    @abstractmethod
    def result(self) -> ExecutionResult:
        """The result so far: every step's record as it stands now."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop the run: nothing new starts, running steps are cancelled."""

    @abstractmethod
    def events(self, timeout: float | None = None) -> Iterator[RunEvent]:
        """Every event of the run from its start, then new ones as they happen, until
        the run's final event."""

    def done(self) -> bool:
        """Whether the run has finished."""
        return self.status() not in ("pending", "running")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.run_id} {self.status()}>"
