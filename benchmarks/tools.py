"""Tools the benchmarks run: no-ops, sleeps, CPU work, importable by worker processes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks import work
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


# The work the 2-process figures and their peers run (benchmarks.work): each returns
# [pid, calls of it running in that process when it started], so the bench sees how many
# steps a process really ran at once.


@tool(registry=registry)
def burn(n: int, after: Any = None) -> list[int]:
    """CPU-bound work holding the GIL: `n` loop turns."""
    return work.burn(n)


@tool(registry=registry)
def counted_sleep_sync(seconds: float, after: Any = None) -> list[int]:
    """A blocking sleep in a tool thread."""
    return work.sleep_sync(seconds)


@tool(registry=registry)
async def counted_sleep(seconds: float, after: Any = None) -> list[int]:
    """A sleep on the worker's event loop."""
    return await work.sleep_async(seconds)


@tool(registry=registry)
def numbers(n: int) -> list[int]:
    """The list a map step runs over."""
    return list(range(n))
