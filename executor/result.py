"""`ExecutionResult`: a run's record with what users do with it, and `FlowFailedError`."""

from __future__ import annotations

from executor.errors import DagrelayError
from executor.run.records import RunRecord
from executor.views.timeline.chart import render_html, render_svg


class ExecutionResult(RunRecord):
    """The outcome of a run: status, output, every step's record, where time went."""

    def raise_for_status(self) -> ExecutionResult:
        """Return self if the run succeeded.

        Raises:
            FlowFailedError: the run failed, was cancelled or timed out.
        """
        if self.status != "succeeded":
            raise FlowFailedError(self)
        return self

    def to_html(self) -> str:
        """The run as one self-contained HTML page: numbers, timeline, critical path,
        steps and errors (see `executor.views.timeline`)."""
        return render_html(self)

    def to_svg(self) -> str:
        """The run's timeline chart alone, as an SVG document."""
        return render_svg(self)


class FlowFailedError(DagrelayError):
    """Raised by `ExecutionResult.raise_for_status()` when a run did not succeed."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result
        super().__init__(
            f"run {result.run_id} of flow {result.flow_name!r} {result.status}"
            + (f": {result.error}" if result.error else "")
        )
