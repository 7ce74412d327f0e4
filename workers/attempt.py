"""One claimed attempt of a unit on a worker: its records, the tool call, what it came to.

A unit is a step, or an item of a map step (`step[i]`, whose value comes with its
claim). The map step itself is turned into its items (`items_of`), each of which is
then a unit of its own. Nothing here talks to Redis: the pipeline claims before and
settles after.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from executor.backends.redis.claims import Claim, Terminal
from executor.backends.redis.run_context import RunContext
from executor.errors import StepInputError, ToolOutputError
from executor.model.predicates import PredicateError
from executor.model.references import Scope, parse_ref
from executor.model.retry import NO_RETRY
from executor.model.spec import Step
from executor.model.tools import Tool, ToolRegistry, check_output_size
from executor.observability.tracing import record_error, set_worker
from executor.run.attempts import format_tb
from executor.run.context import StepContext, serving
from executor.run.records import StepError
from executor.run.tool_threads import ToolThreads, call_sync

log = logging.getLogger("dagrelay.worker")
# What an attempt came to: status, output, the exception (to retry on), the error.
Outcome = tuple[str, Any, Exception | None, StepError | None]
# A unit's record and its attempt's record, filled in as the attempt goes.
Records = tuple[dict[str, Any], dict[str, Any]]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def item_index(unit: str) -> int | None:
    """The index of an item unit (`s[3]` -> 3); None for a step."""
    return int(unit[unit.index("[") + 1 : -1]) if unit.endswith("]") else None


class SyncCall:
    """A sync tool call in the pool's threads. One given up at its timeout or by a stop
    runs on in a thread outside the pool (`ToolThreads`) and keeps no slot; in a plain
    executor its thread keeps the unit's slot until it returns."""

    def __init__(self) -> None:
        self.thread = ""
        self._lock = threading.Lock()
        self._returned = True  # until a call is submitted
        self._then: Callable[[], None] | None = None

    def returned(self) -> None:
        """Its thread is done (called there): run what was handed over, if anything."""
        with self._lock:
            self._returned = True
            then, self._then = self._then, None
        if then is not None:
            then()

    def submitted(self) -> None:
        with self._lock:
            self._returned = False

    def abandoned(self) -> None:
        """Its call was given up (its thread left the pool): it holds no slot now."""
        with self._lock:
            self._returned = True
            self._then = None

    def hand_over(self, then: Callable[[], None]) -> bool:
        """If the thread still runs, have it call `then` when it returns (True); False if
        it has returned already."""
        with self._lock:
            if self._returned:
                return False
            self._then = then
            return True


class Attempts:
    """Runs claimed attempts for one worker process."""

    def __init__(self, registry: ToolRegistry, process: str, max_output_bytes: int | None) -> None:
        self.registry = registry
        self.process = process
        self.max_output_bytes = max_output_bytes

    def begin(self, claim: Claim, worker: str) -> Records:
        """The unit's record and attempt record as the attempt starts (it holds its slot,
        its claim and any tool slot: intervals of a limited tool never overlap)."""
        started = now_iso()
        attempt_rec: dict[str, Any] = {
            "number": claim.attempt,
            "started_at": started,
            "worker": worker,
        }
        first = (
            started if claim.attempt == claim.base + 1 or not claim.started_at else claim.started_at
        )
        record: dict[str, Any] = {
            "worker": worker,
            "queued_at": claim.queued_at,
            "started_at": first,
        }
        if claim.queued_at:
            record["queue_wait"] = max(0.0, _seconds(claim.queued_at, first))
        return record, attempt_rec

    async def call(
        self,
        ctx: RunContext,
        unit: str,
        step: Step,
        tool: Tool | None,
        claim: Claim,
        records: Records,
        threads: concurrent.futures.Executor,
        sync_call: SyncCall | None,
    ) -> Outcome:
        """Call the tool once, a sync one in `threads`, within its timeout. A cancel (the
        run stopped) comes out as the `cancelled` outcome; its error is the stop's, which
        the settling script knows."""
        record, attempt_rec = records
        t0 = time.perf_counter()
        try:
            if tool is None:
                raise LookupError(
                    f"tool {step.tool!r} is not registered in worker {self.process} "
                    f"(known: {', '.join(self.registry.names()) or 'none'})"
                )
            index = item_index(unit)
            scope = (
                Scope(ctx.inputs, claim.outputs or {}, claim.item, index, in_map=True)
                if index is not None
                else Scope(ctx.inputs, claim.outputs or {})
            )
            data = scope.resolve(step.inputs)
            record["inputs"] = data
            kwargs = tool.validate_inputs(data)
            timeout = step.timeout if step.timeout is not None else tool.timeout
            serves = StepContext(
                ctx.run_id, ctx.dag.flow.name, step.id, item=index, worker=self.process
            ).for_attempt(claim.attempt, timeout)
            with serving(serves):
                output = await _call(tool, kwargs, timeout, threads, sync_call)
            return "succeeded", tool.dump_output(output), None, None
        except asyncio.CancelledError:
            return "cancelled", None, None, StepError(type="CancelledError", message="stopped")
        except Exception as exc:
            return "failed", None, exc, StepError.from_exception(exc, format_tb(exc))
        finally:
            attempt_rec.update(finished_at=now_iso(), duration=time.perf_counter() - t0)
            if sync_call is not None and sync_call.thread:
                worker = f"{self.process}:{sync_call.thread}"
                record["worker"] = attempt_rec["worker"] = worker
                set_worker(worker)

    def terminal(
        self,
        unit: str,
        step: Step,
        tool: Tool | None,
        claim: Claim,
        records: Records,
        outcome: Outcome,
        lane: str,
    ) -> tuple[Terminal, Any]:
        """What to settle for an outcome, with the output as data: the terminal status,
        or (`retry_ms`) another attempt if the policy allows one (the settling script
        records it cancelled instead if the run's stop caught it)."""
        record, attempt_rec = records
        status, output, exc, error = outcome
        output_json = json.dumps(output) if status == "succeeded" else ""
        try:
            check_output_size(step.tool, output_json, self.max_output_bytes)
        except ToolOutputError as too_big:  # the step fails; none of it reaches Redis
            status, output, output_json, exc = "failed", None, "", None
            error = StepError.from_exception(too_big)
        record_error(error)  # a failed attempt's span says so
        finished = attempt_rec["finished_at"]
        attempt_rec["error"] = error.model_dump() if error else None
        retry_ms = None
        if exc is not None:
            policy = step.retry or (tool.retry if tool else None) or NO_RETRY
            delay = policy.next_delay(claim.attempt - claim.base, exc)
            if delay is not None:
                retry_ms = int(delay * 1000)
        record.update(finished_at=finished, error=error.model_dump() if error else None)
        first = claim.attempt == claim.base + 1  # this pass's first attempt
        if first and record.get("started_at") == attempt_rec["started_at"]:
            record["duration"] = attempt_rec["duration"]  # the step is its one attempt
        elif record.get("started_at"):
            record["duration"] = _seconds(record["started_at"], finished)
        terminal = Terminal(
            unit,
            status,
            output_json,
            record,
            finished,
            attempt_rec["worker"],
            claim.attempt,
            # Its error is the record's: the settling script adds the one it records.
            json.dumps({k: v for k, v in attempt_rec.items() if k != "error"}),
            retry_ms,
            lane,
        )
        return terminal, output


def log_attempt(
    run_id: str, unit: str, tool: str, terminal: Terminal, attempt_rec: dict[str, Any]
) -> None:
    """The INFO line of one attempt: tool, outcome, duration (also as fields of the
    record, for `DAGRELAY_LOG_FORMAT=json`); run, step and attempt come with every line
    logged in the attempt's scope, and are set here too for a line logged outside it."""
    if not log.isEnabledFor(logging.INFO):
        return
    outcome = terminal.status
    if terminal.retry_ms is not None:
        outcome = f"failed, retry in {terminal.retry_ms / 1000:g}s"
    duration = float(attempt_rec.get("duration") or 0.0)
    error = attempt_rec.get("error") or {}
    why = f": {error.get('type')}: {error.get('message')}" if error else ""
    log.info(
        "tool %s: %s in %.3fs%s",
        tool,
        outcome,
        duration,
        why,
        extra={
            "run_id": run_id,
            "step_id": unit,
            "attempt": terminal.attempt,
            "tool": tool,
            "outcome": terminal.status,
            "duration": round(duration, 6),
        },
    )


def items_of(
    ctx: RunContext, step: Step, claim: Claim
) -> tuple[list[tuple[str, str]], StepError | None]:
    """A map step's items, each (`''`, its value JSON) to queue, or (status, record JSON)
    decided at once by a `when` on the item; or the error that fails the map (its list
    cannot be read)."""
    assert step.map is not None
    scope = Scope(ctx.inputs, claim.outputs or {})
    try:
        values = scope.lookup(parse_ref(step.map))
    except StepInputError as exc:
        return [], StepError(type="StepInputError", message=str(exc))
    if not isinstance(values, list):
        kind = type(values).__name__
        return [], StepError(
            type="StepInputError", message=f"map {step.map} is a {kind}, not a list"
        )
    predicate = ctx.dag.predicates.get(step.id)
    if predicate is not None and step.id not in ctx.scheduler.per_item:
        predicate = None  # decided the whole step, before it ran
    items: list[tuple[str, str]] = []
    for i, value in enumerate(values):
        if predicate is not None:
            try:
                if not predicate.evaluate(scope.input, scope.outputs, value, i):
                    items.append(("skipped", json.dumps({"status": "skipped", "error": None})))
                    continue
            except PredicateError as exc:
                err = StepError(type="PredicateError", message=str(exc)).model_dump()
                items.append(("failed", json.dumps({"status": "failed", "error": err})))
                continue
        items.append(("", json.dumps(value)))
    return items, None


async def _call(
    tool: Tool,
    kwargs: dict[str, Any],
    timeout: float | None,
    threads: concurrent.futures.Executor,
    sync_call: SyncCall | None,
) -> Any:
    """Await the tool (a sync one in `threads`, in this task's context: its log ids and
    span); TimeoutError after `timeout` seconds. A sync call's timeout starts when it
    starts; one that times out or is stopped is abandoned (`ToolThreads`): its thread
    leaves the pool and its slot is free at once."""
    if not tool.is_async:
        assert sync_call is not None
        run = functools.partial(_in_thread, sync_call, tool.fn)
        sync_call.submitted()
        try:
            return await call_sync(threads, run, kwargs, timeout, tool.name)
        except (TimeoutError, asyncio.CancelledError):
            if isinstance(threads, ToolThreads):
                sync_call.abandoned()
            raise
    coro: Any = tool.fn(**kwargs)
    if timeout is None:
        return await coro
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError:
        raise TimeoutError(f"tool {tool.name!r} exceeded its timeout of {timeout}s") from None


def _in_thread(sync_call: SyncCall, fn: Callable[..., Any], **kwargs: Any) -> Any:
    sync_call.thread = threading.current_thread().name
    try:
        return fn(**kwargs)
    finally:
        sync_call.returned()


def _seconds(start_iso: str, end_iso: str) -> float:
    return (datetime.fromisoformat(end_iso) - datetime.fromisoformat(start_iso)).total_seconds()
