"""A flow as data: its steps and settings, the fields a flow file holds.

`Flow` (in `executor.model.flow`) adds what users do with one: check it, read and
write it as YAML or JSON. What checks and reads flows works on `FlowSpec`, so it
needs nothing from `Flow`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from executor.model.retry import RetryPolicy
from executor.model.tools import Tool

# Airflow's trigger rules, with Airflow's meaning (`executor.run.scheduling.trigger_rule`).
TriggerRule = Literal[
    "all_success",
    "all_failed",
    "all_done",
    "all_skipped",
    "one_success",
    "one_failed",
    "one_done",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
]
OnFailure = Literal["fail_fast", "continue"]


class Step(BaseModel):
    """One call to a tool. `inputs` values may be references (`$input.x`, `$steps.a.b`).

    Args:
        id: unique within the flow; letters, digits, `_` and `-`.
        tool: the registered tool name (or the `Tool` itself).
        inputs: keyword arguments of the tool; strings starting with `$` are references.
        depends_on: ordering-only dependencies, added to those the references imply.
        when: a condition; false skips the step.
        trigger: when the step runs, judged once every dependency is terminal: Airflow's
            rules (`all_success` default, `all_failed`, `all_done`, `all_skipped`,
            `one_success`, `one_failed`, `one_done`, `none_failed`,
            `none_failed_min_one_success`, `none_skipped`, `always`); one that does not
            fire makes the step `skipped` or `upstream_failed` (the README's table).
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

    @field_validator("tool", mode="before")
    @classmethod
    def _tool_name(cls, value: Any) -> Any:
        # `Step(tool=fetch_user)`: the tool object stands for its registered name.
        return value.name if isinstance(value, Tool) else value


class FlowSpec(BaseModel):
    """A DAG of steps, with what the run returns and how it reacts to failure.

    `input` is a JSON Schema of the flow's input object (a `@flow` signature makes one);
    runs refuse an input that does not fit it before any step starts.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    version: str = "1"
    description: str | None = None
    input: dict[str, Any] | None = None
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

    def step(self, step_id: str) -> Step:
        """The step with that id (KeyError if none)."""
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)
