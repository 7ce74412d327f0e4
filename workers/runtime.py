"""What a worker process does with a step message: claim, run the tool, complete, coordinate."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import threading

import dramatiq

from executor.backends.redis.backend import BrokerSender
from executor.backends.redis.claims import Claim, NextClaim, new_token
from executor.backends.redis.coordinator import Coordinator, Keep, now_iso
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import RedisStore
from executor.errors import RunNotFoundError
from executor.model.spec import Step
from executor.model.tools import Tool, ToolRegistry
from workers.attempt import Attempts, Completing, Outcome, Records
from workers.bundles import run_bundle
from workers.detached import AsyncSteps
from workers.monitor import Monitor
from workers.settings import Settings
from workers.sweeper import Sweeper
from workers.tracing import step_scope

log = logging.getLogger("dagrelay.worker")
# Dependents a step keeps, and the scope (span, log ids) it coordinated them in.
Kept = tuple[list[str], contextvars.Context | None]
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
        self.sweeper = Sweeper(store, self.coordinator, self.send_step, settings.sweep_seconds)
        self.worker_base = f"{socket.gethostname()}:{os.getpid()}"
        self._local = threading.local()
        self.draining = False  # shutting down: no new work in place
        self.detached = AsyncSteps(settings.async_steps) if settings.async_steps > 0 else None
        self.attempts = Attempts(
            settings,
            registry,
            store,
            self.monitor,
            self.send_step,
            self.worker_base,
            lambda: self.worker,
            self._loop,
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
        self.attempts.tool_threads.shutdown(wait=False, cancel_futures=True)

    @property
    def worker(self) -> str:
        """This thread's name in records and events (`host:pid:thread`)."""
        name: str | None = getattr(self._local, "worker", None)
        if name is None:  # a few times per step: built once per thread
            name = self._local.worker = f"{self.worker_base}:{threading.current_thread().name}"
        return name

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
    ) -> Kept:
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
                return self._execute(ctx, step, tool, claim, keep), contextvars.copy_context()
        if detach:
            assert self.detached is not None
            self.detached.slots.acquire()  # back-pressure: this thread waits for a slot
        claim = self.store.claim(
            ctx.run_id,
            step_id,
            attempt,
            new_token(),
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
            return [], None
        if claim.kind != "ok":
            log.debug(
                "run %s step %s attempt %s: %s (%s)",
                ctx.run_id,
                step_id,
                attempt,
                claim.kind,
                claim.detail,
            )
            return [], None
        if detach:
            assert self.detached is not None and tool is not None
            self.detached.submit(self._detached_step(ctx, step, tool, claim, keep))
            return [], None
        # Its span and log ids, current while it runs and coordinates (the messages it
        # sends carry them), and under which what it keeps runs next.
        with step_scope(ctx.run_id, step_id, claim.attempt, self.worker, step.tool):
            return self._execute(ctx, step, tool, claim, keep), contextvars.copy_context()

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
            with step_scope(ctx.run_id, step.id, claim.attempt, self.worker, step.tool):
                records = self.attempts.begin(step, claim)
                outcome = await self.attempts.run_async(ctx, step, tool, claim, records)

                def record_it() -> list[str]:  # Redis is sync: in the pool, off the loop
                    item = self._outcome(ctx, step, tool, claim, records, outcome, keep, False)
                    return self._record(ctx, item, keep)

                scope = contextvars.copy_context()
                kept = await loop.run_in_executor(self.detached.pool, scope.run, record_it)
        finally:
            self.detached.slots.release()
        if kept:  # continue in place, in the pool (it may detach again)
            self.detached.pool.submit(self._carry_on, ctx, kept, scope, keep)

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
        kept, scope = self._run_one(ctx, step_id, attempt, inplace, keep)
        self._carry_on(ctx, kept, scope, keep)

    def _carry_on(
        self, ctx: RunContext, kept: list[str], scope: contextvars.Context | None, keep: Keep | None
    ) -> None:
        """Run what a step kept in its scope: their spans are children of its span, as
        they are when its messages carry it."""
        while len(kept) == 1 and scope is not None:
            kept, scope = scope.run(self._run_one, ctx, kept[0], 1, True, keep)
        if kept and scope is not None:
            scope.run(run_bundle, self, ctx, kept, 1, True, keep)

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
        lease_ms, at, worker = int(self.settings.lease_seconds * 1000), now_iso(), self.worker
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
                out.append(NextClaim(d, new_token(), lease_ms, at, worker, ctx.needs[d]))
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
        records = self.attempts.begin(step, claim)
        outcome = self.attempts.run(ctx, step, tool, claim, records)
        item = self._outcome(ctx, step, tool, claim, records, outcome, keep, True)
        return self._record(ctx, item, keep)

    def _outcome(
        self,
        ctx: RunContext,
        step: Step,
        tool: Tool | None,
        claim: Claim,
        records: Records,
        outcome: Outcome,
        keep: Keep | None,
        ahead: bool,
    ) -> Completing | None:
        """What to complete for an attempt's outcome; None if it is retried instead.

        With `ahead` (this thread runs what it keeps next, right away), the dependents
        this thread would keep are claimed in the completion's own round trip.
        """
        finished = self.attempts.finish(ctx, step, tool, claim, records, outcome)
        if finished is None:
            return None
        terminal, output = finished
        succeeded = terminal.status == "succeeded"
        then = self._next_claims(ctx, step.id, keep) if ahead and succeeded else ()
        return terminal, output, then

    def _record(self, ctx: RunContext, item: Completing | None, keep: Keep | None) -> list[str]:
        """Complete one attempt's step (if not retried); the dependents it keeps."""
        return [] if item is None else self._complete(ctx, [item], keep)[0]

    def _complete(
        self,
        ctx: RunContext,
        items: list[Completing],
        keep: Keep | None,
        scopes: list[contextvars.Context] | None = None,
    ) -> list[list[str]]:
        """Record terminal statuses in one round trip, and coordinate each (in its scope:
        see `Coordinator.completed_many`)."""
        # Hints of steps coordinated before (terminal: never claimed again) go with it.
        drops, recorded = self._take_drops(), list[str]()
        kept = self.coordinator.completed_many(
            ctx, items, keep, self._preclaimed(), drops, recorded, scopes
        )
        # Their dependents are decided: their lease hints can go, with this thread's next
        # claim or completion (no extra round trip). Should this process die first, the
        # sweeper finds the hint of a terminal step and repairs, which is then a no-op.
        # Not so a completion refused because the lease was taken over: the hint is the
        # new holder's now.
        done = [f"{ctx.run_id}|{s}" for s in recorded]
        self._local.drops = [*getattr(self._local, "drops", []), *done]
        return kept
