"""One claimed attempt of a step on a worker: its records, the tool call, what it came to.

What runs an attempt is the same for a step of its own message, one continued in place
and one of a bundle; what happens around it (claims, continuing, coordinating) is the
runtime's (runtime.py, bundles.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from executor.backends.redis.claims import Claim, NextClaim, Terminal
from executor.backends.redis.coordinator import now_iso
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import RedisStore
from executor.errors import ToolOutputError
from executor.model.references import Scope
from executor.model.retry import NO_RETRY
from executor.model.spec import Step
from executor.model.tools import Tool, ToolRegistry, check_output_size
from executor.observability.tracing import record_error, record_items
from executor.run.attempts import call_tool, format_tb, map_step
from executor.run.progress import StepProgress
from executor.run.records import StepError
from workers.monitor import Monitor
from workers.settings import Settings

# What an attempt came to: status, output, the exception (to retry on), the error.
Outcome = tuple[str, Any, Exception | None, StepError | None]
# A step's record and its attempt's record, filled in as the attempt goes.
Records = tuple[dict[str, Any], dict[str, Any]]
# Sends a step's next attempt: (run, step, attempt, delay ms or None).
Resend = Callable[[RunContext, str, int, int | None], None]


# A terminal status to record: what, the output as data, dependents to claim ahead.
Completing = tuple[Terminal, Any, tuple[NextClaim, ...]]


class Attempts:
    """Runs claimed attempts for one worker process."""

    def __init__(
        self,
        settings: Settings,
        registry: ToolRegistry,
        store: RedisStore,
        monitor: Monitor,
        resend: Resend,
        process: str,
        worker: Callable[[], str],
        loop: Callable[[], asyncio.AbstractEventLoop],
    ) -> None:
        self.settings, self.registry, self.store, self.monitor = settings, registry, store, monitor
        self._resend, self._process, self._worker, self._loop = resend, process, worker, loop
        self.tool_threads = concurrent.futures.ThreadPoolExecutor(
            settings.tool_threads, thread_name_prefix="dagrelay-tool"
        )

    def begin(self, step: Step, claim: Claim) -> Records:
        """The step record and attempt record of a claimed attempt, as it starts."""
        # Times of this attempt are taken once it holds its claim (and any tool slot), so
        # that intervals of a limited tool never appear to overlap.
        started = now_iso()
        number, worker = claim.attempt, self._worker()
        attempt_rec: dict[str, Any] = {"number": number, "started_at": started, "worker": worker}
        first_start = started if number == 1 or not claim.started_at else claim.started_at
        record: dict[str, Any] = {
            "worker": worker,
            "queued_at": claim.queued_at,
            "started_at": first_start,
        }
        if claim.queued_at:
            record["queue_wait"] = max(0.0, _seconds(claim.queued_at, first_start))
        return record, attempt_rec

    def run(
        self, ctx: RunContext, step: Step, tool: Tool | None, claim: Claim, records: Records
    ) -> Outcome:
        """`run_async` on this thread's own loop, for a caller outside any loop."""
        return self._loop().run_until_complete(self.run_async(ctx, step, tool, claim, records))

    async def run_async(
        self, ctx: RunContext, step: Step, tool: Tool | None, claim: Claim, records: Records
    ) -> Outcome:
        """Call the tool once (or a map step's items) as a task of the running loop, a
        sync tool in the tool threads; the task is what a stopping run cancels.

        Sync tools too go through the loop, exactly as in the embedded backend: a timeout
        or cancel stops the wait at once (a sync call that cannot be interrupted finishes
        in the background, its result discarded). Fills the attempt record with the end
        time, taken before the tool slot is given back.
        """
        record, attempt_rec = records
        t0 = time.perf_counter()
        tracked = self.monitor.track(
            ctx.run_id, step.id, claim.attempt, tool=step.tool, slot=claim.slot
        )
        with tracked.lock:
            tracked.loop, tracked.task = asyncio.get_running_loop(), asyncio.current_task()
            stopped = tracked.reason is not None  # stopped before the task was known
        try:
            if stopped:
                raise asyncio.CancelledError()
            if tool is None:
                raise LookupError(
                    f"tool {step.tool!r} is not registered in worker {self._process} "
                    f"(known: {', '.join(self.registry.names()) or 'none'})"
                )
            if step.map is not None:
                status, output, map_error = await self._map(ctx, step, tool, claim, record)
                return status, output, None, map_error
            kwargs, timeout = self._prepare(ctx, step, tool, claim, record)
            output = await call_tool(tool, kwargs, timeout, self.tool_threads)
            return "succeeded", tool.dump_output(output), None, None
        except asyncio.CancelledError:
            why = tracked.reason or "stopped"
            return "cancelled", None, None, StepError(type="CancelledError", message=f"run {why}")
        except Exception as exc:
            return "failed", None, exc, StepError.from_exception(exc, format_tb(exc))
        finally:
            attempt_rec.update(finished_at=now_iso(), duration=time.perf_counter() - t0)
            self.monitor.untrack(tracked)
            if claim.slot is not None:
                # Free the slot before coordinating: a dependent may want it next.
                self.store.release_slot(step.tool, claim.slot)

    def finish(
        self,
        ctx: RunContext,
        step: Step,
        tool: Tool | None,
        claim: Claim,
        records: Records,
        outcome: Outcome,
    ) -> tuple[Terminal, Any] | None:
        """The terminal status to record for an outcome, with the output as data; None
        when the attempt is retried instead (its next attempt is sent)."""
        record, attempt_rec = records
        run_id, step_id, number, worker = ctx.run_id, step.id, claim.attempt, self._worker()
        status, output, exc, error = outcome
        output_json = json.dumps(output) if status == "succeeded" else ""
        try:
            check_output_size(step.tool, output_json, self.settings.max_output_bytes)
        except ToolOutputError as too_big:  # the step fails; none of it reaches Redis
            status, output, output_json = "failed", None, ""
            error = StepError.from_exception(too_big)
            for item in record.get("items") or ():
                item["output"] = None
        record_error(error)  # a failed attempt's span says so
        finished = attempt_rec["finished_at"]
        if error is not None:
            attempt_rec["error"] = error.model_dump()
        if exc is not None and step.map is None:
            policy = step.retry or (tool.retry if tool else None) or NO_RETRY
            delay = policy.next_delay(number, exc)
            if delay is not None and self.store.retry(
                run_id, step_id, number, json.dumps(attempt_rec), finished, worker, str(error)
            ):
                self._resend(ctx, step_id, number + 1, int(delay * 1000) or None)
                return None
        record.update(finished_at=finished, error=error.model_dump() if error else None)
        if record.get("started_at"):
            record["duration"] = _seconds(record["started_at"], finished)
        terminal = Terminal(
            step_id,
            status,
            output_json,
            record,
            finished,
            worker,
            number,
            json.dumps(attempt_rec),
            str(error) if error else "",
        )
        return terminal, output

    def _prepare(
        self, ctx: RunContext, step: Step, tool: Tool, claim: Claim, record: dict[str, Any]
    ) -> tuple[dict[str, Any], float | None]:
        """The validated keyword arguments of a call, and its timeout."""
        data = Scope(ctx.inputs, claim.outputs or {}).resolve(step.inputs)
        record["inputs"] = data
        timeout = step.timeout if step.timeout is not None else tool.timeout
        return tool.validate_inputs(data), timeout

    async def _map(
        self, ctx: RunContext, step: Step, tool: Tool, claim: Claim, record: dict[str, Any]
    ) -> tuple[str, Any, StepError | None]:
        """Run a map step's items concurrently on the running loop (sync ones in the pool)."""
        progress = StepProgress(step.id, tool.name)

        async def call(t: Tool, kwargs: dict[str, Any], to: float | None) -> Any:
            return await call_tool(t, kwargs, to, self.tool_threads)

        policy = step.retry or tool.retry or NO_RETRY
        timeout = step.timeout if step.timeout is not None else tool.timeout
        try:
            status, output = await map_step(
                progress,
                step,
                tool,
                policy,
                timeout,
                Scope(ctx.inputs, claim.outputs or {}),
                ctx.dag.predicates.get(step.id),
                call,
                self._worker(),
            )
        finally:
            rec = progress.to_record()
            record["items"] = [c.model_dump(mode="json") for c in rec.items or []]
            record_items(ctx.run_id, step.id, rec)
        return status, output, rec.error


def _seconds(start_iso: str, end_iso: str) -> float:
    return (datetime.fromisoformat(end_iso) - datetime.fromisoformat(start_iso)).total_seconds()
