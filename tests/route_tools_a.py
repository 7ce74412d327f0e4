"""Tools of the "a" workers in the routing tests: `common` and `only_a`."""

from __future__ import annotations

import os
import time

from executor import ToolRegistry, tool

registry = ToolRegistry()


@tool(registry=registry)
def common(x: int) -> dict[str, int]:
    """Any worker has it: says which process ran it."""
    return {"x": x, "pid": os.getpid()}


@tool(registry=registry)
def only_a(x: int) -> dict[str, int]:
    """Only the "a" workers have it."""
    return {"x": x, "pid": os.getpid()}


@tool(registry=registry)
def slow_a(seconds: float) -> float:
    """Only the "a" workers have it: sleeps, so the heartbeat shows it running."""
    time.sleep(seconds)
    return seconds
