"""Tools for the fault-injection and bad-payload tests: every distributed-test tool, plus
tools that leave per-process traces and tools that return awkward outputs.

Workers load this module with `--tools tests.fault_tools`; it imports only `executor`,
the standard library and the other test tool modules (no state in Python globals: what a
test must see across processes goes to files whose paths are inputs).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from executor import ToolRegistry, tool
from tests import dist_tools
from tests.conformance.tools import append_line

registry = ToolRegistry()
for _t in dist_tools.registry:
    registry.register(_t)


@tool(registry=registry)
def traced(log: str, seconds: float = 0.0, value: Any = None) -> Any:
    """Append `start PID T` to `log`, sleep `seconds` (blocking), append `end PID T`,
    return `value`. T is `time.time()`; a killed call leaves a start without an end."""
    append_line(log, f"start {os.getpid()} {time.time()!r}")
    time.sleep(seconds)
    append_line(log, f"end {os.getpid()} {time.time()!r}")
    return value


@tool(registry=registry)
async def atraced(log: str, seconds: float = 0.0, value: Any = None) -> Any:
    """`traced`, awaiting instead of blocking (a step a worker may detach)."""
    append_line(log, f"start {os.getpid()} {time.time()!r}")
    await asyncio.sleep(seconds)
    append_line(log, f"end {os.getpid()} {time.time()!r}")
    return value


@tool(registry=registry)
async def inc(x: int, seconds: float = 0.0) -> int:
    """`x + 1`, after an (async) sleep: the unit of the load test's chains."""
    if seconds:
        await asyncio.sleep(seconds)
    return x + 1


@tool(registry=registry)
def total_of(values: list[int]) -> int:
    return sum(values)


# Awkward outputs ----------------------------------------------------------------------
@tool(registry=registry)
def big_text(n: int) -> str:
    """A string of `n` ASCII characters (its JSON is n + 2 bytes)."""
    return "x" * n


@tool(registry=registry)
def big_list(n: int, width: int = 100) -> list[str]:
    """`n` strings of `width` characters."""
    return ["y" * width for _ in range(n)]


class _Opaque:
    """Not JSON: a tool returning one must fail its step, not the worker."""


@tool(registry=registry)
def opaque() -> Any:
    return _Opaque()


@tool(registry=registry)
def raw_bytes() -> Any:
    """Bytes that are not UTF-8."""
    return b"\xff\xfe\x00"


@tool(registry=registry)
def nested(depth: int) -> Any:
    """A list nested `depth` deep: [[[...]]]."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@tool(registry=registry)
def not_finite(kind: str = "nan") -> float:
    return float(kind)


@tool(registry=registry)
def self_loop() -> Any:
    """A list that contains itself."""
    value: list[Any] = []
    value.append(value)
    return value
