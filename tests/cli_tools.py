"""Tools for the distributed CLI tests: every tool of `examples.tools`, plus slow ones.

A worker started with `--tools tests.cli_tools` runs both the example flows and runs long
enough to cancel. The module has its own `registry`, so importing it next to other tools
modules never clashes with their names.
"""

from __future__ import annotations

import asyncio
import time

import examples.tools  # noqa: F401 - registers the example tools in the default registry
from executor import ToolRegistry, default_registry, tool

registry = ToolRegistry()
for _tool in default_registry:
    if _tool.origin.startswith("examples.tools."):
        registry.register(_tool)


@tool(registry=registry)
async def nap(seconds: float) -> float:
    """Sleep (async, cancellable at once) and return how long."""
    await asyncio.sleep(seconds)
    return seconds


@tool(registry=registry)
def doze(seconds: float) -> float:
    """Sleep in a worker thread (sync) and return how long."""
    time.sleep(seconds)
    return seconds


@tool(registry=registry)
def explode(message: str) -> str:
    """Always fail, with `message`."""
    raise RuntimeError(message)


@tool(registry=registry)
def needs_file(path: str) -> str:
    """Fail until the file at `path` exists (a test creates it between a run and its
    rerun), then return its text."""
    with open(path, encoding="utf-8") as f:
        return f.read()
