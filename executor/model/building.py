"""The flow being built by a `@flow` body: what turns a tool call into a step there.

Kept apart so `Tool.__call__` can ask "am I inside a `@flow` body?" without the tools
module importing the authoring one (which imports tools).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

from executor.errors import FlowValidationError


class Builder(Protocol):
    """What a `@flow` body's tool calls are handed to."""

    def add_step(
        self, tool: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Any: ...

    def add_map(
        self, tool: Any, over: Any, inputs: dict[str, Any], options: dict[str, Any]
    ) -> Any: ...


#: The builder of the `@flow` body running in this context (None: a plain call).
current: ContextVar[Builder | None] = ContextVar("dagrelay_flow_builder", default=None)


class Call:
    """A tool with step options (`tool.options(...)`), called inside a `@flow` body."""

    def __init__(self, tool: Any, options: dict[str, Any]) -> None:
        self.tool = tool
        self.options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _builder(self.tool, "options").add_step(self.tool, args, kwargs, self.options)

    def map(self, over: Any, /, **inputs: Any) -> Any:
        """One call per item of `over`; see `Tool.map`."""
        return _builder(self.tool, "map").add_map(self.tool, over, inputs, self.options)


def _builder(tool: Any, what: str) -> Builder:
    builder = current.get()
    if builder is None:
        raise FlowValidationError(
            f"tool {tool.name!r}: .{what}(...) adds a step, so it only works inside a "
            "@flow function; call the tool itself to run it directly"
        )
    return builder
