"""The flow model: steps calling tools, wired by references."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from executor.model.retry import RetryPolicy

if TYPE_CHECKING:
    from executor.model.dag import Dag
    from executor.model.tools import ToolRegistry

TriggerRule = Literal["all_success", "none_failed", "all_done"]
OnFailure = Literal["fail_fast", "continue"]


class Step(BaseModel):
    """One call to a tool. `inputs` values may be references (`$input.x`, `$steps.a.b`).

    Args:
        id: unique within the flow; letters, digits, `_` and `-`.
        tool: the registered tool name.
        inputs: keyword arguments of the tool; strings starting with `$` are references.
        depends_on: ordering-only dependencies, added to those the references imply.
        when: a condition; false skips the step.
        trigger: `all_success` (default), `none_failed` or `all_done`.
        map: a reference to a list; the tool is called once per item (`$item`, `$index`).
        retry, timeout: per attempt; default to the tool's.
        queue: the worker queue (distributed mode).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    tool: str = Field(min_length=1, max_length=200)
    inputs: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    when: str | None = None
    trigger: TriggerRule = "all_success"
    map: str | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = Field(default=None, gt=0)
    queue: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None


class Flow(BaseModel):
    """A DAG of steps, with what the run returns and how it reacts to failure."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    version: str = "1"
    description: str | None = None
    steps: list[Step]
    output: Any = None
    on_failure: OnFailure = "fail_fast"
    timeout: float | None = Field(default=None, gt=0)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # `version: 1` in YAML is a number; a version is text, so accept it as "1".
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    def validate_flow(self, registry: ToolRegistry | None = None) -> Dag:
        """Check the flow and return its dependency graph; see `validate`."""
        from executor.model.validation import validate_flow

        return validate_flow(self, registry)

    def validate(self, registry: ToolRegistry | None = None) -> Flow:  # type: ignore[override]
        """Report every problem at once.

        Args:
            registry: the tools to check names and inputs against; None checks the
                structure only (ids, references, cycles, predicates).
        Returns:
            the flow itself, so calls can be chained.
        Raises:
            FlowValidationError: with `.problems`, one line each.
        """
        self.validate_flow(registry)
        return self

    def step(self, step_id: str) -> Step:
        """The step with that id (KeyError if none)."""
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    # Flow files ---------------------------------------------------------------
    @classmethod
    def from_yaml(cls, text: str | bytes, source: str | None = None) -> Flow:
        """Parse a YAML flow (safe_load, with size/depth/step limits)."""
        from executor.model.files import parse_flow

        return parse_flow(text, "yaml", source)

    @classmethod
    def from_json(cls, text: str | bytes, source: str | None = None) -> Flow:
        """Parse a JSON flow (with size/depth/step limits)."""
        from executor.model.files import parse_flow

        return parse_flow(text, "json", source)

    def to_yaml(self) -> str:
        """The flow as YAML that `from_yaml` reads back."""
        from executor.model.files import dump_flow

        return dump_flow(self, "yaml")

    def to_json(self) -> str:
        """The flow as JSON that `from_json` reads back."""
        from executor.model.files import dump_flow

        return dump_flow(self, "json")


def load_flow(path: str | Path) -> Flow:
    """Read a flow file (`.yaml`, `.yml` or `.json`).

    Raises:
        FlowValidationError: naming the file and the problem; never a parser traceback.
    """
    from executor.model.files import load_flow_file

    return load_flow_file(path)
