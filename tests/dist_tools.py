"""Tools for the distributed tests: every conformance tool, plus a few that leave traces in
files (so a test can see, across processes, how often and when a tool really ran).

Workers load this module with `--tools tests.dist_tools`; it imports only `executor`, the
standard library and the conformance tools.
"""

from __future__ import annotations

import os
import time
from typing import Any

from executor import ToolRegistry, tool
from tests.conformance import tools as conformance
from tests.conformance.tools import append_line, next_attempt

registry = ToolRegistry()
for _t in conformance.registry:
    registry.register(_t)


@tool(registry=registry)
def counted(counter: str, seconds: float = 0.0, value: Any = None) -> Any:
    """Count the call in the file `counter`, sleep `seconds` (blocking), return `value`."""
    next_attempt(counter)
    time.sleep(seconds)
    return value


@tool(registry=registry, max_concurrency=1)
def exclusive_logged(log: str, seconds: float = 0.0, value: Any = None) -> Any:
    """At most one call at a time cluster-wide; appends `start T PID` / `end T PID` to
    `log` (T: `time.time()`), from inside the call."""
    append_line(log, f"start {time.time()!r} {os.getpid()}")
    time.sleep(seconds)
    append_line(log, f"end {time.time()!r} {os.getpid()}")
    return value


def log_call(log: str, value: Any, run: Any) -> Any:
    """Append `start T PID VALUE` and `end T PID VALUE` around `run()` (T: time.time())."""
    append_line(log, f"start {time.time()!r} {os.getpid()} {value}")
    try:
        return run()
    finally:
        append_line(log, f"end {time.time()!r} {os.getpid()} {value}")


@tool(registry=registry)
def logged(log: str, seconds: float = 0.0, value: Any = None) -> Any:
    """A sync call that logs when it starts and ends, and in which process."""
    return log_call(log, value, lambda: time.sleep(seconds) or value)


@tool(registry=registry)
async def logged_async(log: str, seconds: float = 0.0, value: Any = None) -> Any:
    """An async call that logs when it starts and ends, and in which process."""
    import asyncio

    append_line(log, f"start {time.time()!r} {os.getpid()} {value}")
    try:
        await asyncio.sleep(seconds)
        return value
    finally:
        append_line(log, f"end {time.time()!r} {os.getpid()} {value}")


@tool(registry=registry, max_concurrency=2)
def logged_limited(log: str, seconds: float = 0.0, value: Any = None) -> Any:
    """`logged`, at most two calls at a time cluster-wide."""
    return log_call(log, value, lambda: time.sleep(seconds) or value)


@tool(registry=registry)
def spin(log: str, seconds: float, value: Any = None) -> Any:
    """Keep a core busy for `seconds` (CPU-bound work: the GIL is held)."""

    def busy() -> Any:
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            n += 1
        return value

    return log_call(log, value, busy)


@tool(registry=registry)
def counted_item(folder: str, value: Any, seconds: float = 0.0, pids: str | None = None) -> Any:
    """Count the call in `folder/value` (a map item's calls), mark the process in
    `pids/<pid>` if given, sleep, return `value`."""
    next_attempt(os.path.join(folder, str(value)))
    if pids is not None:
        open(os.path.join(pids, str(os.getpid())), "a").close()
    time.sleep(seconds)
    return value
