"""The tools of the conformance suite, in one importable module.

Every backend runs these: the local backend in this process, the Redis backends in
worker processes that import this module (`--tools tests.conformance.tools`). So:

* this module imports only `executor` and the standard library;
* tools keep no state in Python globals: whatever must survive between attempts or be
  seen by the test (attempt counters, "was I cancelled?" markers) lives in a file
  whose path the test passes as an input;
* tools are controlled through their inputs (sleep seconds, fail flags, ...).

Add new tools here, never inside a test module.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from typing import Any

from pydantic import BaseModel

from executor import RetryPolicy, ToolRegistry, tool

registry = ToolRegistry()


class TransientError(Exception):
    """An error retry policies in the suite choose to retry."""


class PermanentError(Exception):
    """An error retry policies in the suite choose not to retry."""


ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "TransientError": TransientError,
    "PermanentError": PermanentError,
}


# Files shared with the test (possibly across processes) --------------------------------
def append_line(path: str, line: str) -> None:
    """Append one line to a file, atomically with respect to other appenders."""
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line + "\n")
        f.flush()


def read_lines(path: str) -> list[str]:
    """The lines of a marker file ([] if it does not exist yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def next_attempt(path: str) -> int:
    """Increment the counter in `path` and return its new value (1 on the first call)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 64).decode() or "0"
        n = int(raw) + 1
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(n).encode())
        return n
    finally:
        os.close(fd)


async def _sleep_marked(seconds: float, marker: str | None) -> None:
    if marker:
        append_line(marker, "started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if marker:
            append_line(marker, "cancelled")
        raise
    if marker:
        append_line(marker, "finished")


# Tools -------------------------------------------------------------------------------
@tool(registry=registry)
async def sleep(seconds: float = 0.0, value: Any = None, marker: str | None = None) -> Any:
    """Sleep (async), then return `value`. `marker` records started/finished/cancelled."""
    await _sleep_marked(seconds, marker)
    return value


@tool(registry=registry)
def sync_sleep(seconds: float = 0.0, value: Any = None) -> Any:
    """Sleep in a blocking way (must run in a thread), then return `value`."""
    time.sleep(seconds)
    return value


@tool(registry=registry, max_concurrency=1)
async def exclusive(seconds: float = 0.0, value: Any = None) -> Any:
    """Like `sleep`, but at most one call runs at a time."""
    await asyncio.sleep(seconds)
    return value


@tool(registry=registry, timeout=0.2)
async def slow_with_default_timeout(seconds: float, marker: str | None = None) -> str:
    """A tool whose own timeout (0.2 s per attempt) applies unless the step sets one."""
    await _sleep_marked(seconds, marker)
    return "done"


@tool(registry=registry)
def echo(value: Any = None) -> Any:
    """Return the (resolved) input."""
    return value


@tool(registry=registry)
def add(a: int, b: int) -> int:
    return a + b


@tool(registry=registry)
def total(values: list[int]) -> int:
    return sum(values)


@tool(registry=registry)
def concat(parts: list[Any], sep: str = "") -> str:
    """Join the string forms of `parts` (None shows as 'None')."""
    return sep.join(str(p) for p in parts)


@tool(registry=registry)
async def fail(
    message: str = "boom", error: str = "ValueError", seconds: float = 0.0, value: Any = None
) -> Any:
    """Sleep `seconds`, then raise `error` (a name from ERRORS)."""
    await asyncio.sleep(seconds)
    raise ERRORS[error](message)


@tool(registry=registry)
def fail_if(value: Any, bad: Any) -> Any:
    """Raise ValueError when `value == bad`, else return `value`."""
    if value == bad:
        raise ValueError(f"bad value {value!r}")
    return value


@tool(registry=registry)
async def flaky(
    counter: str,
    fail_times: int,
    error: str = "TransientError",
    hang: float = 0.0,
    value: Any = None,
    slow_attempt: int = 0,
    slow_seconds: float = 0.0,
) -> Any:
    """Fail the first `fail_times` attempts (counted in the file `counter`), then
    return `value`. A failing attempt sleeps `hang` seconds first (so a step timeout
    can hit it) and then raises `error`. Attempt number `slow_attempt` first sleeps
    `slow_seconds` (to be cancelled in the middle of a retry)."""
    n = next_attempt(counter)
    if n == slow_attempt:
        await asyncio.sleep(slow_seconds)
    if n <= fail_times:
        await asyncio.sleep(hang)
        raise ERRORS[error](f"attempt {n} fails")
    return value


@tool(
    registry=registry,
    retry=RetryPolicy(max_attempts=3, backoff=0.0, retry_on=("TransientError",)),
)
async def flaky_with_default_retry(counter: str, fail_times: int) -> int:
    """`flaky` with a tool-level retry policy (3 attempts on TransientError)."""
    n = next_attempt(counter)
    if n <= fail_times:
        raise TransientError(f"attempt {n} fails")
    return n


class Order(BaseModel):
    name: str
    qty: int


class Profile(BaseModel):
    name: str
    tags: list[str]
    orders: list[Order]


@tool(registry=registry)
def profile(name: str, tags: list[str]) -> Profile:
    """A pydantic output with nested lists, for references like `$steps.p.orders.1.name`."""
    return Profile(
        name=name,
        tags=tags,
        orders=[Order(name=f"{name}-order{i}", qty=i) for i in range(3)],
    )


@tool(registry=registry)
def make_items(n: int, delay: float = 0.0) -> list[dict[str, Any]]:
    """`n` items `{"name", "n", "delay"}`; later items sleep less (finish earlier)."""
    return [{"name": f"item{i}", "n": i, "delay": delay * (n - i)} for i in range(n)]


@tool(registry=registry)
def bad_output() -> int:
    """Returns something that does not fit its annotation."""
    return "not a number"  # type: ignore[return-value]


def _context(fail_first: bool) -> dict[str, Any]:
    from executor import current_step
    from executor.observability import logs

    step = current_step()
    assert step is not None
    if fail_first and step.attempt == 1:
        raise RuntimeError("first attempt fails")
    remaining = step.remaining()
    return {
        "run_id": step.run_id,
        "flow": step.flow,
        "step_id": step.step_id,
        "attempt": step.attempt,
        "item": step.item,
        "worker": bool(step.worker),
        "deadline_ahead": remaining is not None and 0 < remaining <= 30,
        "log_ids": list(logs.current()[:2]),
    }


@tool(registry=registry)
def context_sync(fail_first: bool = False, value: Any = None) -> dict[str, Any]:
    """What `current_step()` says in a sync tool (its thread has the caller's context)."""
    return _context(fail_first)


@tool(registry=registry)
async def context_async(fail_first: bool = False, value: Any = None) -> dict[str, Any]:
    """What `current_step()` says in an async tool."""
    return _context(fail_first)
