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
