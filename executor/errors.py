"""Exceptions users see: invalid flows up front, missing runs, bad inputs and outputs.

`FlowFailedError` lives beside `ExecutionResult`, which raises it.
"""

from __future__ import annotations


class DagrelayError(Exception):
    """Base class of every dagrelay error."""


class FlowValidationError(DagrelayError, ValueError):
    """A flow, flow file or input is invalid; `problems` lists every problem found.

    Args:
        problems: one line per problem, each naming what is wrong.
        source: the file (or other origin) the flow came from, if any.
    """

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return f"{prefix}{self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{prefix}{len(self.problems)} problems:\n{lines}"


class StepInputError(DagrelayError):
    """A step's inputs could not be resolved or do not fit its tool."""


class ToolOutputError(DagrelayError):
    """A tool returned something that does not fit its return annotation or JSON."""


class RunNotFoundError(DagrelayError, KeyError):
    """No run with that id is known (or its state has expired)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "run not found"
