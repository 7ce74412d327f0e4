"""Tools of the "b" workers in the routing tests: `common` only (no `only_a`)."""

from __future__ import annotations

import os

from executor import ToolRegistry, tool

registry = ToolRegistry()


@tool(registry=registry)
def common(x: int) -> dict[str, int]:
    """Any worker has it: says which process ran it."""
    return {"x": x, "pid": os.getpid()}
