"""Calling a tool with timeouts and retries, attempt by attempt, recording each one.

Shared by the embedded backend (every step) and workers (the items of a map step).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from executor.errors import StepInputError
from executor.model.predicates import Predicate, PredicateError
from executor.model.references import Scope, parse_ref
from executor.model.retry import RetryPolicy
from executor.model.spec import Step
from executor.model.tools import Tool
from executor.run.context import StepContext, serving
from executor.run.progress import AttemptProgress, StepProgress
from executor.run.records import StepError, StepStatus
from executor.run.tool_threads import ToolThreads, call_sync


def now() -> datetime:
    return datetime.now(UTC)


def format_tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=20))


async def call_tool(
    tool: Tool,
    kwargs: dict[str, Any],
    timeout: float | None,
    threads: concurrent.futures.Executor | None,
) -> Any:
    """Call a tool, a sync one in `threads`; TimeoutError after `timeout` seconds.

    A timed-out async tool is cancelled. A sync tool cannot be interrupted: in
    `ToolThreads` it is abandoned (its thread leaves the pool and finishes in the
    background, its result discarded) and its timeout starts when it starts.
    """
    if not tool.is_async:
        return await call_sync(threads or _default_threads(), tool.fn, kwargs, timeout, tool.name)
    coro = tool.fn(**kwargs)
    if timeout is None:
        return await coro
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError:
        raise TimeoutError(f"tool {tool.name!r} exceeded its timeout of {timeout}s") from None


_DEFAULT: list[ToolThreads] = []


def _default_threads() -> ToolThreads:
    """Threads for calls given none (as asyncio's default executor would be)."""
    if not _DEFAULT:
        _DEFAULT.append(ToolThreads(32))
    return _DEFAULT[0]


Caller = Callable[[Tool, dict[str, Any], float | None], Any]
Hook = Callable[[int, StepError | None], None]
# `(the step's record, attempt number, error)`: given the record, a caller can pass one
# bound method for all its steps instead of making a closure per step.
StepHook = Callable[[StepProgress, int, StepError | None], None]
_NO_SLOT = contextlib.nullcontext()  # stateless: one for every call without a slot
# The error of an attempt cut short by a cancel, until its runner says why (`stop_error`).
CUT = StepError(type="CancelledError", message="cancelled")


async def run_attempts(
    rec: StepProgress,
    tool: Tool,
    policy: RetryPolicy,
    timeout: float | None,
    raw_inputs: Any,
    resolve: Callable[[Any], Any],
    call: Caller,
    worker: str,
    slot: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None,
    t_queued: float | None = None,
    on_start: StepHook | None = None,
    on_retry: StepHook | None = None,
    context: StepContext | None = None,
    base: int = 0,
) -> tuple[StepStatus, Any]:
    """Run attempts until one succeeds or the policy gives up, filling `rec`.

    Args:
        resolve: turns `raw_inputs` (with references) into JSON data.
        call: awaits the tool call (see `call_tool`).
        context: what `current_step()` says during each attempt (its number and
            deadline filled in per attempt).
        base: attempts an earlier pass of the run made (a rerun): numbers go on from
            there, while the retry policy counts this pass's own.
        slot: a concurrency slot held during each attempt (not during backoff).
        t_queued: perf_counter time the step was queued, for `queue_wait`.
    Returns:
        `("succeeded", output)` or `("failed", None)`; cancellation propagates.
    """
    t_start = 0.0
    number = base
    while True:
        number += 1
        async with slot() if slot is not None else _NO_SLOT:
            t_attempt = time.perf_counter()
            attempt = AttemptProgress(number, time.time(), worker)
            if number == base + 1:
                t_start = t_attempt
                rec.started_at = attempt.started_at
                rec.worker = worker
                rec.status = "running"
                if t_queued is not None:
                    rec.queue_wait = t_attempt - t_queued
                if on_start is not None:
                    on_start(rec, number, None)
            rec.attempts.append(attempt)
            exc: Exception | None = None
            output: Any = None
            try:
                data = resolve(raw_inputs)
                if rec.inputs is None:
                    rec.inputs = data
                kwargs = tool.validate_inputs(data)
                serves = context.for_attempt(number, timeout) if context is not None else None
                with serving(serves):
                    output = tool.dump_output(await call(tool, kwargs, timeout))
            except Exception as e:
                exc = e
            except BaseException:
                _close(attempt, t_attempt, CUT)
                rec.finished_at, rec.duration = attempt.finished_at, time.perf_counter() - t_start
                raise
            _close(attempt, t_attempt, None)
        rec.finished_at = attempt.finished_at
        rec.duration = time.perf_counter() - t_start
        if exc is None:
            rec.error = None  # the step's error is its final attempt's
            return "succeeded", output
        error = StepError.from_exception(exc, format_tb(exc))
        attempt.error = rec.error = error
        delay = policy.next_delay(number - base, exc)
        if delay is None:
            return "failed", None
        if on_retry is not None:
            on_retry(rec, number, error)
        if delay > 0:
            await asyncio.sleep(delay)


def _close(attempt: AttemptProgress, t_attempt: float, error: StepError | None) -> None:
    attempt.finished_at = time.time()
    attempt.duration = time.perf_counter() - t_attempt
    attempt.error = error


async def map_step(
    rec: StepProgress,
    step: Step,
    tool: Tool,
    policy: RetryPolicy,
    timeout: float | None,
    scope: Scope,
    predicate: Predicate | None,
    call: Caller,
    worker: str,
    slot: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None,
    t_queued: float | None = None,
    on_start: StepHook | None = None,
    context: StepContext | None = None,
    base: int = 0,
) -> tuple[StepStatus, Any]:
    """Run a map step: one tool call per item of `step.map`, concurrently, in `rec.items`.

    A `when` that reads `item`/`index` filters items (a false one is `skipped`). `rec`
    stays readable while the items run. The step has one attempt: the run of its items
    (each item's own attempts are in its record).
    Returns:
        `("succeeded", outputs in item order)`, or `("failed", None)` with `rec.error`.
    """
    assert step.map is not None
    t0 = time.perf_counter()
    rec.started_at = time.time()
    rec.worker = worker
    rec.status = "running"
    rec.items = []
    attempt = AttemptProgress(base + 1, rec.started_at, worker)
    rec.attempts.append(attempt)
    if t_queued is not None:
        rec.queue_wait = t0 - t_queued
    if on_start is not None:
        on_start(rec, base + 1, None)
    try:
        try:
            items = scope.lookup(parse_ref(step.map))
        except StepInputError as exc:
            rec.error = StepError(type="StepInputError", message=str(exc))
            return "failed", None
        if not isinstance(items, list):
            rec.error = StepError(
                type="StepInputError",
                message=f"map {step.map} is a {type(items).__name__}, not a list",
            )
            return "failed", None

        async def one(child: StepProgress, i: int, item: Any) -> tuple[StepStatus, Any]:
            if predicate is not None:
                try:
                    if not predicate.evaluate(scope.input, scope.outputs, item, i):
                        return "skipped", None
                except PredicateError as exc:
                    child.error = StepError(type="PredicateError", message=str(exc))
                    return "failed", None
            child_scope = Scope(scope.input, scope.outputs, item, i, in_map=True)
            return await run_attempts(
                child,
                tool,
                policy,
                timeout,
                step.inputs,
                child_scope.resolve,
                call,
                worker,
                slot=slot,
                t_queued=time.perf_counter(),
                context=replace(context, item=i) if context is not None else None,
            )

        return await run_items(rec, items, one)
    except BaseException:
        attempt.error = CUT
        raise
    finally:
        rec.finished_at = attempt.finished_at = time.time()
        rec.duration = attempt.duration = time.perf_counter() - t0
        if attempt.error is None:
            attempt.error = rec.error


async def run_items(
    rec: StepProgress,
    items: list[Any],
    run_item: Callable[[StepProgress, int, Any], Any],
) -> tuple[StepStatus, Any]:
    """Run a map step's items concurrently; the output is the item outputs in order.

    Args:
        run_item: `(child record, index, item)` → awaitable of `(status, output)`.
    """
    rec.items = [StepProgress(f"{rec.step_id}[{i}]", rec.tool) for i in range(len(items))]
    for child in rec.items:
        child.queued_at = time.time()

    async def settled(child: StepProgress, i: int, item: Any) -> tuple[StepStatus, Any]:
        # Its outcome is its own the moment it ends: a stop after that does not undo it.
        status, output = await run_item(child, i, item)
        child.status, child.output = status, output
        return status, output

    tasks = [
        asyncio.ensure_future(settled(child, i, item))
        for i, (child, item) in enumerate(zip(rec.items, items, strict=True))
    ]
    try:
        outcomes = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for child in rec.items:
            if child.status not in ("succeeded", "failed", "skipped"):
                child.status = "cancelled"
        raise
    for child, (status, output) in zip(rec.items, outcomes, strict=True):
        child.status = status
        child.output = output
    failed = [i for i, (st, _) in enumerate(outcomes) if st == "failed"]
    if failed:
        first = rec.items[failed[0]].error or StepError(type="Error", message="failed")
        rec.error = StepError(
            type=first.type,
            message=f"{len(failed)} of {len(items)} items failed; item {failed[0]}: "
            f"{first.message}",
            traceback=first.traceback,
        )
        return "failed", None
    return "succeeded", [out for _, out in outcomes]
