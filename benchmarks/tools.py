"""Tools the benchmarks run: no-ops and sleeps, importable by worker processes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from executor import ToolRegistry, tool

registry = ToolRegistry()


@tool(registry=registry)
async def noop(x: Any = None) -> int:
    """Does nothing: what is left is the executor's own cost."""
    return 0


@tool(registry=registry)
def noop_sync(x: Any = None) -> int:
    """A sync no-op: adds the thread hop."""
    return 0


@tool(registry=registry)
async def sleep(seconds: float, after: Any = None) -> float:
    """Sleeps without a thread: I/O-bound work."""
    await asyncio.sleep(seconds)
    return seconds


@tool(registry=registry)
def sleep_sync(seconds: float, after: Any = None) -> float:
    time.sleep(seconds)
    return seconds
