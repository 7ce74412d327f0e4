"""What a worker process does with a step message: claim, run the tool, complete, coordinate."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

import dramatiq

from executor.attempts import call_tool, format_tb, map_step
from executor.backends.redis import BrokerSender
from executor.backends.redis_store import Claim, NextClaim, RedisStore, Terminal
from executor.coordinator import Coordinator, Keep, RunContext, now_iso
from executor.errors import RunNotFoundError, ToolOutputError
from executor.flow import Step
from executor.progress import StepProgress
from executor.references import Scope
from executor.result import StepError
from executor.retry import NO_RETRY
from executor.tools import Tool, ToolRegistry, check_output_size
from executor.tracing import record_error
from workers.bundles import run_bundle
from workers.detached import AsyncSteps
from workers.monitor import Monitor, StepCancelled, Tracked
from workers.settings import Settings
from workers.sweeper import Sweeper
from workers.tracing import step_scope

log = logging.getLogger("dagrelay.worker")
# What an attempt came to: status, output, the exception (to retry on), the error.
Outcome = tuple[str, Any, Exception | None, StepError | None]
# A terminal status to record: what, the output as data, dependents to claim ahead.
Completing = tuple[Terminal, Any, tuple[NextClaim, ...]]
# Dependents of at most this many dependencies are claimed ahead (see `_next_claims`).
AHEAD_MAX_DEPS = 2
# A step whose tool has no free slot comes back after this long (still queued).
SLOT_RETRY_MS = 20


class StepRuntime:
    """Runs step messages in this process; one instance per worker process."""

    def __init__(
        self, settings: Settings, registry: ToolRegistry, store: RedisStore, broker: dramatiq.Broker
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.sender = BrokerSender(broker)
        self.coordinator = Coordinator(store, self.sender, self._tool_timeout)
        self.monitor = Monitor(store, settings.lease_seconds)
        self.sweeper = Sweeper(self)
        self.worker_base = f"{socket.gethostname()}:{os.getpid()}"
        self._local = threading.local()
        self.draining = False  # shutting down: no new work in place
        self.detached = AsyncSteps(settings.async_steps) if settings.async_steps > 0 else None
        self._tool_threads = concurrent.futures.ThreadPoolExecutor(
            settings.tool_threads, thread_name_prefix="dagrelay-tool"
        )

    def _tool_timeout(self, name: str) -> float | None:
        return self.registry.get(name).timeout if name in self.registry else None

    def start(self) -> None:
        self.monitor.start()
        self.sweeper.start()
        if self.detached is not None:
            self.detached.start()

    def stop(self) -> None:
        if self.detached is not None:
            self.detached.drain(timeout=30)  # leases stay renewed meanwhile
        self.sweeper.stop()
        self.monitor.stop()
        self._tool_threads.shutdown(wait=False, cancel_futures=True)

    @property
    def worker(self) -> str:
        return f"{self.worker_base}:{threading.current_thread().name}"

    def _loop(self) -> asyncio.AbstractEventLoop:
        # Async tools run on an event loop owned by the worker thread: one coroutine per
        # thread, as with Dramatiq's own async actors, and no loop shared across threads.
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
        return loop

    # The actor ----------------------------------------------------------------------
    def run_step(self, run_id: str, step_id: str | list[str], attempt: int) -> None:
        """Handle one step message, or a bundle of them (a list of step ids; see
        bundles.py). Delivery is at least once; duplicates are dropped by the claims.

        When the step's completion makes dependents ready that this worker can run, the
        same thread continues with them in place (claimed in Redis like any step), saving
        the broker round trip: one dependent always, more while this process has spare
        capacity (run together, as a bundle); the others are sent as messages.
        """
        try:
            ctx = self.coordinator.context(run_id)
        except RunNotFoundError:
            log.warning("run %s: no state (expired or unknown); message dropped", run_id)
            return
        ids = step_id if isinstance(step_id, list) else [step_id]
        unknown = [s for s in ids if not isinstance(s, str) or s not in ctx.dag.steps]
        if unknown or not ids:
            log.warning("run %s: no step %r; message dropped", run_id, unknown or step_id)
            return
        keep: Keep = lambda sid, kept: self._can_continue(ctx, sid, kept)  # noqa: E731
        if isinstance(step_id, list):
            run_bundle(self, ctx, list(dict.fromkeys(step_id)), attempt, False, keep)
            return
        # Dramatiq's time limit of this message covers everything run under it: continue
        # in place only under a message without one (steps without a timeout).
        unlimited = ctx.time_limit_ms(step_id, self._tool_timeout(ctx.dag.steps[step_id].tool))
        self._continue(ctx, step_id, keep if unlimited is None else None, attempt, False)

    def _can_continue(self, ctx: RunContext, step_id: str, kept: int) -> bool:
        if self.draining:
            return False
        # One dependent always continues here; more only while this process has room.
        if kept and self.monitor.running() + kept >= self.settings.tool_threads:
            return False
        step = ctx.dag.steps[step_id]
        tool = self.registry.get(step.tool) if step.tool in self.registry else None
        return (
            tool is not None
            and tool.max_concurrency is None  # a slot may be taken: go through the queue
            and ctx.queue(step_id) in self.settings.queues  # routing decides who runs it
        )

    def _run_one(
        self,
        ctx: RunContext,
        step_id: str,
        attempt: int,
        inplace: bool,
        keep: Keep | None,
    ) -> list[str]:
        """Claim and run one attempt; returns the dependents to continue with."""
        step = ctx.dag.steps[step_id]
        tool = self.registry.get(step.tool) if step.tool in self.registry else None
        slot = (tool.name, tool.max_concurrency) if tool and tool.max_concurrency else None
        detach = (
            self.detached is not None
            and tool is not None
            and tool.is_async
            and step.map is None
            and slot is None
        )
        claim = self._preclaimed().pop(step_id, None)  # taken with its dependency's end
        if claim is not None:
            with step_scope(ctx.run_id, step_id, claim.attempt, self.worker, step.tool):
                return self._execute(ctx, step, tool, claim, keep)
        if detach:
            assert self.detached is not None
            self.detached.slots.acquire()  # back-pressure: this thread waits for a slot
        claim = self.store.claim(
            ctx.run_id,
            step_id,
            attempt,
            secrets.token_hex(6),
            int(self.settings.lease_seconds * 1000),
            now_iso(),
            self.worker,
            ctx.needs[step_id],
            semaphore=slot,
            inplace=inplace,
            drop_hints=self._take_drops(),
        )
        if detach and claim.kind != "ok":
            assert self.detached is not None
            self.detached.slots.release()
        if claim.kind == "full":
            # Every slot of the tool is taken cluster-wide: the step stays queued (its
            # queue_wait grows) and this message comes back shortly.
            self.send_step(ctx, step_id, attempt, SLOT_RETRY_MS)
            return []
        if claim.kind != "ok":
            log.debug(
                "run %s step %s attempt %s: %s (%s)",
                ctx.run_id,
                step_id,
                attempt,
                claim.kind,
                claim.detail,
            )
            return []
        if detach:
            assert self.detached is not None and tool is not None
            self.detached.submit(self._detached_step(ctx, step, tool, claim, keep))
            return []
        with step_scope(ctx.run_id, step_id, claim.attempt, self.worker, step.tool):
            return self._execute(ctx, step, tool, claim, keep)  # its span, its log ids

    async def _detached_step(
        self,
        ctx: RunContext,
        step: Step,
        tool: Tool,
        claim: Claim,
        keep: Keep | None,
    ) -> None:
        """A claimed async step on the shared loop: call, then record it in the pool."""
        assert self.detached is not None
        loop = asyncio.get_running_loop()
        kept: list[str] = []
        try:
            record, attempt_rec = self._begin(step, claim)
            outcome = await self._attempt_async(ctx, step, tool, claim, record, attempt_rec)

            def record_it() -> list[str]:  # Redis is sync: in the pool, off the loop
                item = self._outcome(
                    ctx, step, tool, claim, record, attempt_rec, outcome, keep, False
                )
                return self._record(ctx, item, keep)

            kept = await loop.run_in_executor(self.detached.pool, record_it)
        finally:
            self.detached.slots.release()
        if kept:  # continue in place, in the pool (it may detach again)
            self.detached.pool.submit(self._carry_on, ctx, kept, keep)

    async def _attempt_async(
        self,
        ctx: RunContext,
        step: Step,
        tool: Tool,
        claim: Claim,
        record: dict[str, Any],
        attempt_rec: dict[str, Any],
    ) -> Outcome:
        """Call a registered tool once as a task of the running loop (a sync tool in the
        tool threads); the task is what a stopping run cancels."""
        t0 = time.perf_counter()
        tracked = self.monitor.track(ctx.run_id, step.id, claim.attempt, tool=step.tool)
        with tracked.lock:
            tracked.loop, tracked.task = asyncio.get_running_loop(), asyncio.current_task()
            stopped = tracked.reason is not None  # stopped before the task was known
        try:
            if stopped:
                raise asyncio.CancelledError()
            kwargs, timeout = self._prepare(ctx, step, tool, claim, record)
            output = await call_tool(tool, kwargs, timeout, self._tool_threads)
            return "succeeded", tool.dump_output(output), None, None
        except asyncio.CancelledError:
            why = tracked.reason or "stopped"
            return "cancelled", None, None, StepError(type="CancelledError", message=f"run {why}")
        except Exception as exc:
            return "failed", None, exc, StepError.from_exception(exc, format_tb(exc))
        finally:
            attempt_rec.update(finished_at=now_iso(), duration=time.perf_counter() - t0)
            self.monitor.untrack(tracked)

    def _continue(
        self,
        ctx: RunContext,
        step_id: str,
        keep: Keep | None,
        attempt: int = 1,
        inplace: bool = True,
    ) -> None:
        """Run a step, then what it unlocks and keeps: one after another on this thread,
        several at once as a bundle."""
        self._carry_on(ctx, self._run_one(ctx, step_id, attempt, inplace, keep), keep)

    def _carry_on(self, ctx: RunContext, kept: list[str], keep: Keep | None) -> None:
        while len(kept) == 1:
            kept = self._run_one(ctx, kept[0], 1, True, keep)
        if kept:
            run_bundle(self, ctx, kept, 1, True, keep)

    def _preclaimed(self) -> dict[str, Claim]:
        """Steps this thread claimed ahead (see `NextClaim`) and runs next."""
        claimed: dict[str, Claim] | None = getattr(self._local, "claimed", None)
        if claimed is None:
            claimed = self._local.claimed = {}
        return claimed

    def _next_claims(
        self, ctx: RunContext, step_id: str, keep: Keep | None
    ) -> tuple[NextClaim, ...]:
        """Dependents this thread would run next the plain way (no `when`, no map, no tool
        slot, not detached): asked ahead with the completion, in its round trip."""
        if keep is None:
            return ()
        out: list[NextClaim] = []
        lease_ms = int(self.settings.lease_seconds * 1000)
        for d in ctx.dag.dependents[step_id]:
            step = ctx.dag.steps[d]
            tool = self.registry.get(step.tool) if step.tool in self.registry else None
            if (
                # A wide join is made ready by one completion of many: asking it ahead
                # at each would cost more than the round trip it saves once.
                len(ctx.dag.deps[d]) <= AHEAD_MAX_DEPS
                and d not in ctx.dag.predicates
                and step.map is None
                and tool is not None
                and not (self.detached is not None and tool.is_async)
                and keep(d, len(out))
            ):
                token = secrets.token_hex(6)
                out.append(NextClaim(d, token, lease_ms, now_iso(), self.worker, ctx.needs[d]))
        return tuple(out)

    def _take_drops(self) -> list[str]:
        drops: list[str] = getattr(self._local, "drops", [])
        self._local.drops = []
        return drops

    def send_step(self, ctx: RunContext, step_id: str, attempt: int, delay_ms: int | None) -> None:
        self.coordinator.send(ctx, [step_id], attempt, delay_ms)

    def _execute(
        self,
        ctx: RunContext,
        step: Step,
        tool: Tool | None,
        claim: Claim,
        keep: Keep | None,
    ) -> list[str]:
        """Run a claimed attempt, then record it: retry, or complete and coordinate."""
        record, attempt_rec = self._begin(step, claim)
        outcome = self._attempt(ctx, step, tool, claim, record, attempt_rec)
        item = self._outcome(ctx, step, tool, claim, record, attempt_rec, outcome, keep, True)
        return self._record(ctx, item, keep)

    def _begin(self, step: Step, claim: Claim) -> tuple[dict[str, Any], dict[str, Any]]:
        """The step record and attempt record of a claimed attempt, as it starts."""
        # Times of this attempt are taken once it holds its claim (and any tool slot), so
        # that intervals of a limited tool never appear to overlap.
        started = now_iso()
        number, worker = claim.attempt, self.worker
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

    def _outcome(
        self,
        ctx: RunContext,
        step: Step,
        tool: Tool | None,
        claim: Claim,
        record: dict[str, Any],
        attempt_rec: dict[str, Any],
        outcome: Outcome,
        keep: Keep | None,
        ahead: bool,
    ) -> Completing | None:
        """What to complete for an attempt's outcome; None if it is retried instead.

        With `ahead` (this thread runs what it keeps next, right away), the dependents
        this thread would keep are claimed in the completion's own round trip.
        """
        run_id, step_id, number, worker = ctx.run_id, step.id, claim.attempt, self.worker
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
                self.send_step(ctx, step_id, number + 1, int(delay * 1000) or None)
                return None
        record.update(finished_at=finished, error=error.model_dump() if error else None)
        if record.get("started_at"):
            record["duration"] = _seconds(record["started_at"], finished)
        terminal = Terminal(
            step_id,
            status,
            output_json,
            record,
            now_iso(),
            worker,
            number,
            json.dumps(attempt_rec),
            str(error) if error else "",
        )
        then = self._next_claims(ctx, step_id, keep) if ahead and status == "succeeded" else ()
        return terminal, output, then

    def _record(self, ctx: RunContext, item: Completing | None, keep: Keep | None) -> list[str]:
        """Complete one attempt's step (if not retried); the dependents it keeps."""
        return [] if item is None else self._complete(ctx, [item], keep)[0]

    def _complete(
        self, ctx: RunContext, items: list[Completing], keep: Keep | None
    ) -> list[list[str]]:
        """Record terminal statuses in one round trip, and coordinate each."""
        # Hints of steps coordinated before (terminal: never claimed again) go with it.
        drops, recorded = self._take_drops(), list[str]()
        kept = self.coordinator.completed_many(
            ctx, items, keep, self._preclaimed(), drops, recorded
        )
        # Their dependents are decided: their lease hints can go, with this thread's next
        # claim or completion (no extra round trip). Should this process die first, the
        # sweeper finds the hint of a terminal step and repairs, which is then a no-op.
        # Not so a completion refused because the lease was taken over: the hint is the
        # new holder's now.
        done = [f"{ctx.run_id}|{s}" for s in recorded]
        self._local.drops = [*getattr(self._local, "drops", []), *done]
        return kept

    def _prepare(
        self, ctx: RunContext, step: Step, tool: Tool, claim: Claim, record: dict[str, Any]
    ) -> tuple[dict[str, Any], float | None]:
        """The validated keyword arguments of a call, and its timeout."""
        data = Scope(ctx.inputs, claim.outputs or {}).resolve(step.inputs)
        record["inputs"] = data
        timeout = step.timeout if step.timeout is not None else tool.timeout
        return tool.validate_inputs(data), timeout

    def _attempt(
        self,
        ctx: RunContext,
        step: Step,
        tool: Tool | None,
        claim: Claim,
        record: dict[str, Any],
        attempt_rec: dict[str, Any],
    ) -> Outcome:
        """Call the tool once (or a map step's items); returns status, output, error.

        Fills `attempt_rec` with the end time, taken before the tool slot is given back.
        """
        t0 = time.perf_counter()
        limited = tool is not None and tool.max_concurrency is not None
        tracked = self.monitor.track(
            ctx.run_id,
            step.id,
            claim.attempt,
            tool=step.tool,
            slot=self.store.holder(ctx.run_id, step.id) if limited else None,
        )
        try:
            if tool is None:
                raise LookupError(
                    f"tool {step.tool!r} is not registered in worker {self.worker_base} "
                    f"(known: {', '.join(self.registry.names()) or 'none'})"
                )
            if step.map is not None:
                scope = Scope(ctx.inputs, claim.outputs or {})
                status, output, map_error = self._run_map(ctx, step, tool, scope, record, tracked)
                return status, output, None, map_error
            kwargs, timeout = self._prepare(ctx, step, tool, claim, record)
            output = tool.dump_output(self._call(tool, kwargs, timeout, tracked))
            return "succeeded", output, None, None
        except (StepCancelled, asyncio.CancelledError):
            why = tracked.reason or "stopped"
            return "cancelled", None, None, StepError(type="CancelledError", message=f"run {why}")
        except Exception as e:
            exc = e
        finally:
            attempt_rec.update(finished_at=now_iso(), duration=time.perf_counter() - t0)
            self.monitor.untrack(tracked)
            if limited:
                # Free the slot before coordinating: a dependent may want it next.
                self.store.release_slot(step.tool, ctx.run_id, step.id)
        return "failed", None, exc, StepError.from_exception(exc, format_tb(exc))

    def _call(
        self, tool: Tool, kwargs: dict[str, Any], timeout: float | None, tracked: Tracked
    ) -> Any:
        # Sync tools too go through this thread's loop into the tool pool, exactly as in
        # the embedded backend: a timeout or cancel stops the wait at once (a sync call
        # that cannot be interrupted finishes in the background, its result discarded).
        loop = self._loop()
        task = loop.create_task(call_tool(tool, kwargs, timeout, self._tool_threads))
        with tracked.lock:
            tracked.loop, tracked.task = loop, task
            if tracked.reason is not None:
                task.cancel()
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            raise StepCancelled() from None

    def _run_map(
        self,
        ctx: RunContext,
        step: Step,
        tool: Tool,
        scope: Scope,
        record: dict[str, Any],
        tracked: Tracked,
    ) -> tuple[str, Any, StepError | None]:
        """Run a map step's items concurrently on this thread's loop (sync ones in the pool)."""
        progress = StepProgress(step.id, tool.name)

        async def call(t: Tool, kwargs: dict[str, Any], to: float | None) -> Any:
            return await call_tool(t, kwargs, to, self._tool_threads)

        policy = step.retry or tool.retry or NO_RETRY
        timeout = step.timeout if step.timeout is not None else tool.timeout
        loop = self._loop()
        task = loop.create_task(
            map_step(
                progress,
                step,
                tool,
                policy,
                timeout,
                scope,
                ctx.dag.predicates.get(step.id),
                call,
                self.worker,
            )
        )
        with tracked.lock:
            tracked.loop, tracked.task = loop, task
        try:
            status, output = loop.run_until_complete(task)
        except asyncio.CancelledError:
            raise StepCancelled() from None
        finally:
            rec = progress.to_record()
            record["items"] = [c.model_dump(mode="json") for c in rec.items or []]
        return status, output, rec.error


def _seconds(start_iso: str, end_iso: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end_iso) - datetime.fromisoformat(start_iso)).total_seconds()
