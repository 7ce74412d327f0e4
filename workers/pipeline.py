"""Every unit a worker process runs, whatever brought it, goes through one pipeline.

1. **admit**: a slot of its kind (see `Pool`): a token message's consumer held one when
   it fetched the message; a dependent kept in place, or claimed ahead with its
   dependency's completion, takes a free one, or the slot its dependency frees.
2. **claim**: in Redis, with its lease (take.lua for a token's units, claim.lua for kept
   ones, complete.lua for those claimed ahead); the monitor renews the lease from then on.
3. **run**: a task on the process's one event loop; a sync tool in the pool's threads,
   within its timeout; a map step becomes its items (each a unit of its own).
4. **settle**: the units of a run that end in the same turn of the loop are recorded in
   one round trip (complete.lua: terminal status or retry, dependents released).
5. **next**: the coordinator decides the dependents (the rules are the scheduling
   core's); those this process has free slots for run here (they start in the slots the
   settled units free), the rest are queued for any worker with a token message.

A token message's actor only admits and claims, then hands the units to the loop and
returns: the message is acknowledged once its units are claimed, and from then on their
leases keep them safe (a dead worker's units are re-queued by a sweeper).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any

from executor.backends.redis.claims import Claim, NextClaim, Terminal, new_token
from executor.backends.redis.coordinator import Coordinator, Next, now_iso
from executor.backends.redis.messages import Sender, lanes_of, local_share, per_token
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import RedisStore, Refill
from executor.errors import RunNotFoundError
from executor.model.spec import Step
from executor.model.tools import Tool, ToolRegistry
from executor.observability import tracing
from executor.run.tool_threads import ToolThreads
from workers.attempt import (
    Attempts,
    Outcome,
    Records,
    SyncCall,
    item_index,
    items_of,
    log_attempt,
)
from workers.monitor import Monitor, Tracked
from workers.pool import Pool
from workers.restart import abandoning_threads
from workers.settings import Settings
from workers.stranded import Stranded
from workers.sweeper import Sweeper, give_back
from workers.tracing import step_scope

log = logging.getLogger("dagrelay.worker")
# Dependents of at most this many dependencies are claimed ahead with the completion of
# one of them: a wide join is made ready by one completion of many, and asking it ahead
# at each would cost more than the round trip it saves once.
AHEAD_MAX_DEPS = 2
# A token whose units wait for a tool's concurrency slots comes back after this long.
SLOT_RETRY_MS = 20
# A token whose units' tool this process lacks goes back to the queue for this long, so
# that it reaches a worker that has the tool rather than bouncing here at once.
HANDBACK_MS = 50


@dataclass(slots=True)
class Intake:
    """The message a Dramatiq thread is on, and the slot its consumer held for it."""

    lane: str
    slot: bool
    taken: bool = False


# Set by the middleware around each message (Dramatiq's way to hand an actor its
# message: see its CurrentMessage middleware).
INTAKE: contextvars.ContextVar[Intake | None] = contextvars.ContextVar("intake", default=None)


@dataclass(eq=False)
class Unit:
    """A claimed unit on its way through the pipeline."""

    ctx: RunContext
    claim: Claim
    lane: str
    tracked: Tracked
    scope: contextvars.Context
    sync_call: SyncCall | None = None
    records: Records | None = None
    freed: bool = False  # its slot went back already (a map step, once expanded)

    @property
    def step_id(self) -> str:
        return self.claim.unit.partition("[")[0]


@dataclass(slots=True)
class Ending:
    """A unit's outcome waiting for its run's group commit."""

    unit: Unit
    terminal: Terminal
    output: Any
    scope: contextvars.Context
    done: asyncio.Future[None] = field(default_factory=asyncio.Future)


class Pipeline:
    """The one path of every unit in this worker process."""

    def __init__(
        self, settings: Settings, registry: ToolRegistry, store: RedisStore, sender: Sender
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.pool = Pool(settings.threads, settings.async_steps)
        self.coordinator = Coordinator(
            store,
            sender,
            self._tool_of,
            max_map_bytes=settings.max_output_bytes,
            lease_ms=int(settings.lease_seconds * 1000),
        )
        self.monitor = Monitor(store, settings.lease_seconds)
        self.sweeper = Sweeper(self.coordinator, settings.sweep_seconds, settings.lease_seconds)
        self.stranded = Stranded(store, self.coordinator, settings.no_worker_seconds)
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        self.attempts = Attempts(registry, self.process, settings.max_output_bytes)
        self.lease_ms = int(settings.lease_seconds * 1000)
        self.lanes = lanes_of(settings.queues)
        self.draining = False  # shutting down: nothing new starts here
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="dagrelay-loop", daemon=True)
        self._threads: ToolThreads | None = None
        self._ending: dict[str, list[Ending]] = {}  # group commits to flush, by run
        self._spare: Counter[str] | None = None  # slots freed by a flush, by kind
        self._drops: deque[tuple[str, str]] = deque()  # leases of units coordinated already
        self._inflight = 0  # units on the loop
        self._idle = threading.Event()
        self._idle.set()

    @property
    def worker(self) -> str:
        return f"{self.process}:loop"

    def _tool_of(self, name: str) -> Tool | None:
        return self.registry.get(name) if name in self.registry else None

    # Life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop, the monitor and the sweeper (once; later calls do nothing)."""
        if self._thread.is_alive():
            return
        self._thread.start()
        self.monitor.start()
        self.sweeper.start()

    def _executor(self) -> ToolThreads:
        # The sync slots are threads: as many as `--threads`, known by the first call.
        if self._threads is None:
            self._threads = abandoning_threads(self.pool.sync.capacity, self.settings)
        return self._threads

    def drain(self, timeout: float) -> None:
        """Wait for the units in flight (graceful shutdown; their leases stay renewed),
        then stop the loop, the sweeper and the monitor."""
        self.draining = True
        if not self._idle.wait(timeout):
            log.warning(
                "stopping with %d units still running (their leases expire)", self._inflight
            )
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        self.sweeper.stop()
        self.monitor.stop()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # 1-2. Admit and claim a token's units (on a Dramatiq worker thread) ----------------
    def take(self, run_id: str, lane: str, units: int) -> None:
        """Handle a token message: take up to `units` of the lane's queued units of the
        run, as many as this process has slots for, and start them."""
        intake = INTAKE.get()
        if intake is not None:  # fetched by a consumer: the lane is the queue it came from
            intake.taken = True
            own, lane = int(intake.slot), intake.lane
        else:  # called directly
            own = 0
        if not (isinstance(run_id, str) and isinstance(units, int) and units >= 1):
            log.warning("token %r dropped: not a run id, a lane and a count", (run_id, lane, units))
            self.pool.release(lane, own)
            return
        if lane not in self.lanes:
            log.warning("token for lane %r dropped: this worker serves %s", lane, self.lanes)
            self.pool.release(lane, own)
            return
        slots = own + self.pool.reserve(lane, units - own)
        claims: list[Claim] = []
        try:
            if slots == 0 or self.draining:
                self._keep_token(run_id, lane, units, SLOT_RETRY_MS)
                return
            try:
                ctx = self.coordinator.context(run_id)
            except RunNotFoundError:
                log.warning("run %s: no state (expired or unknown); token dropped", run_id)
                return
            claims = self._claim_queued(ctx, lane, slots, units)
            if claims:
                scope = contextvars.copy_context()
                self.loop.call_soon_threadsafe(self._start, ctx, claims, lane, scope)
        except Exception:
            # Never lose the token (Dramatiq would dead-letter the message): whatever
            # it could not take waits for the same token, a moment later.
            log.exception("run %s lane %s: token not taken; sent again", run_id, lane)
            with contextlib.suppress(Exception):
                self._keep_token(run_id, lane, units, SLOT_RETRY_MS * 50)
        finally:
            self.pool.release(lane, slots - len(claims))

    def _claim_queued(self, ctx: RunContext, lane: str, slots: int, units: int) -> list[Claim]:
        """Claim up to `slots` of the lane's due units; units of a tool with a concurrency
        limit take its slots first (their tokens come back later while none is free)."""
        limited, skip = self._limited(ctx)
        per = max(1, units)
        took = self.store.take(
            ctx.run_id,
            lane,
            slots,
            per,
            self.lease_ms,
            now_iso(),
            self.worker,
            spend=True,
            skip=skip,
            drops=self._take_drops(),
        )
        claims = list(took.claims)
        tool_full = False
        room = slots - len(claims)
        # Units of tools this process lacks stay queued for a worker that has them.
        passed = [u for u in took.passed if _step(u) in limited]
        handed_back = len(passed) < len(took.passed)
        if handed_back:  # none may have it: then they fail after a wait
            self.stranded.check(ctx, lane, lambda s: ctx.dag.steps[s].tool not in self.registry)
        if passed and room:
            wanted = passed[:room]
            held = self._tool_slots(ctx, limited, wanted)
            tool_full = len(held) < len(wanted)
            if held:
                more = self.store.take(
                    ctx.run_id,
                    lane,
                    len(held),
                    per,
                    self.lease_ms,
                    now_iso(),
                    self.worker,
                    spend=False,
                    named=tuple(held),
                )
                for c in more.claims:
                    claims.append(replace(c, slot=held.pop(c.unit)))
                self.store.release_slots([(limited[_step(u)].name, h) for u, h in held.items()])
        # While a tool's slots are all taken, its units' tokens come back in a moment
        # rather than at once (which would only spin between the workers).
        # So do the tokens of units left for a worker with the tool: not straight back
        # to this one.
        delay = HANDBACK_MS if handed_back else SLOT_RETRY_MS if tool_full else None
        self.coordinator.send_tokens(ctx.run_id, lane, took.tokens, per, delay)
        if took.delay_ms >= 0:
            self.coordinator.send_tokens(ctx.run_id, lane, 1, 1, took.delay_ms)
        if (tool_full or handed_back) and not claims and not took.tokens:
            self._keep_token(ctx.run_id, lane, units, HANDBACK_MS if handed_back else SLOT_RETRY_MS)
        return claims

    def _limited(self, ctx: RunContext) -> tuple[dict[str, Tool], tuple[str, ...]]:
        """The run's steps whose tool has a concurrency limit, and what a take passes
        over: their units (a map step calls no tool itself: its items take the slots),
        and the units of steps whose tool this process lacks (a map step and its
        items), which wait for a worker that has it."""
        found = ctx.derived.get("limited")
        if found is None:
            limited = {
                sid: tool
                for sid, st in ctx.dag.steps.items()
                if (tool := self._tool_of(st.tool)) is not None and tool.max_concurrency
            }
            skip = [f"{s}[]" if ctx.dag.steps[s].map else s for s in limited]
            for sid, st in ctx.dag.steps.items():
                if st.tool not in self.registry:
                    skip += [sid, f"{sid}[]"] if st.map else [sid]
            found = ctx.derived["limited"] = (limited, tuple(skip))
        return found

    def _tool_slots(
        self, ctx: RunContext, limited: dict[str, Tool], units: list[str]
    ) -> dict[str, str]:
        """Take tool slots for units of limited tools: {unit: holder} of those that got one."""
        by_tool: dict[str, list[str]] = {}
        for u in units:
            by_tool.setdefault(limited[_step(u)].name, []).append(u)
        held: dict[str, str] = {}
        for name, us in by_tool.items():
            tool = self.registry.get(name)
            holders = {self.store.holder(ctx.run_id, u): u for u in us}
            assert tool.max_concurrency
            for h in self.store.acquire_slots(
                name, tool.max_concurrency, list(holders), self.lease_ms
            ):
                held[holders[h]] = h
        return held

    def _keep_token(self, run_id: str, lane: str, units: int, delay_ms: int) -> None:
        """The token's units could not be taken here now: the token lives on, later."""
        try:
            self.store.add_token(run_id, lane)
            self.coordinator.send_tokens(run_id, lane, 1, max(1, units), delay_ms)
        except RunNotFoundError:
            pass

    # 3. Run (on the loop) -------------------------------------------------------------
    def _start(
        self, ctx: RunContext, claims: list[Claim], lane: str, scope: contextvars.Context
    ) -> None:
        for claim in claims:
            self._launch(ctx, claim, lane, scope)

    def _launch(self, ctx: RunContext, claim: Claim, lane: str, scope: contextvars.Context) -> None:
        """Run a claimed unit as a task of the loop (it holds a slot of `lane`'s kind)."""
        step = ctx.dag.steps[claim.unit.partition("[")[0]]
        if self.draining:  # claimed by a round trip that outlasted the stop: not here
            give_back(self.coordinator, ctx, claim, lane, step.tool)
            self.pool.release(lane)
            return
        tool = self._tool_of(step.tool)
        tracked = Tracked(
            ctx.run_id,
            claim.unit,
            claim.attempt,
            lane,
            spared_on_fail=step.id in ctx.scheduler.survivors,
            slot=claim.slot,
            tool=step.tool,
        )
        self.monitor.track(tracked)
        unit = Unit(ctx, claim, lane, tracked, scope)
        if tool is not None and not tool.is_async:
            unit.sync_call = SyncCall()
        self._inflight += 1
        self._idle.clear()
        # In the scope of what made it ready: its span is a child of that one.
        context = scope.copy()
        if claim.trace:
            context.run(tracing.attach, {"traceparent": claim.trace})
        task = self.loop.create_task(self._run(unit, step, tool), context=context)
        if not tracked.attach(self.loop, task):  # a stop came first
            task.cancel()

    async def _run(self, unit: Unit, step: Step, tool: Tool | None) -> None:
        ctx, claim = unit.ctx, unit.claim
        try:
            records = unit.records = self.attempts.begin(claim, self.worker)
            with step_scope(
                ctx.run_id,
                claim.unit,
                claim.attempt,
                self.worker,
                step.tool,
                records[1]["started_at"],
            ):
                if step.map is not None and item_index(claim.unit) is None:
                    t0 = time.perf_counter()
                    outcome = await self._expand(unit, step)
                    if outcome is None:
                        return  # its items run now; the last one ends it
                    records[1].update(finished_at=now_iso(), duration=time.perf_counter() - t0)
                else:
                    outcome = await self.attempts.call(
                        ctx,
                        claim.unit,
                        step,
                        tool,
                        claim,
                        records,
                        self._executor(),
                        unit.sync_call,
                    )
                terminal, output = self.attempts.terminal(
                    claim.unit, step, tool, claim, records, outcome, unit.lane
                )
                log_attempt(ctx.run_id, claim.unit, step.tool, terminal, records[1])
                await self._settle(unit, terminal, output)
        except Exception:  # Redis gone past its retries: the lease brings it back
            log.exception("run %s unit %s: not settled", ctx.run_id, claim.unit)
            self._free(unit)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _expand(self, unit: Unit, step: Step) -> Outcome | None:
        """A map step becomes its items; its slot goes to them (and to others). None once
        expanded, else the outcome that ends the map now (its list cannot be read)."""
        ctx, claim = unit.ctx, unit.claim
        items, error = items_of(ctx, step, claim)
        if error is not None:
            return "failed", None, None, error
        assert unit.records is not None
        record, _ = unit.records
        lane = self.coordinator.lane(ctx, step.id)
        queued = sum(1 for decided, _ in items if not decided)
        tool = self._tool_of(step.tool)
        # Items claimed here at once, into the map's own slot and the free ones (not for
        # a tool with a concurrency limit: its items take its slots through their tokens).
        own = 1 if self.pool.kind(lane) == self.pool.kind(unit.lane) else 0
        ahead = 0
        if queued and not self.draining and tool is not None and not tool.max_concurrency:
            share = local_share(queued)
            ahead = own + self.pool.reserve(lane, share - own) if share > own else share
        self.monitor.untrack(unit.tracked)
        try:
            expansion = self.store.expand(
                ctx.run_id,
                step.id,
                claim.attempt,
                now_iso(),
                lane,
                unit.lane,
                per_token(queued),
                record,
                items,
                ahead,
                self.lease_ms,
                self.worker,
                ctx.dag.dependents[step.id],
                self.settings.max_output_bytes,
                tracing.current_context().get("traceparent", ""),
            )
        except BaseException:
            self.pool.release(lane, ahead)
            raise
        kept = len(expansion.claims)
        self.pool.release(lane, ahead - kept)
        if not (own and ahead):
            self.pool.release(unit.lane)  # the map's own slot was not among them
        unit.freed = True
        if expansion.kind == "stopped":
            return "cancelled", None, None, None
        if expansion.kind != "ok":
            return None  # not this attempt's any more
        self.coordinator.send_tokens(ctx.run_id, lane, expansion.tokens, per_token(queued))
        scope = contextvars.copy_context()
        for c in expansion.claims:
            self._launch(ctx, c, lane, scope)
        if expansion.map_status:  # no item to run: the map ended with its expansion
            kept_steps = self.coordinator.ended(
                ctx, step.id, expansion.map_status, None, expansion, self._keep
            )
            if kept_steps:
                self._claim_kept(ctx, kept_steps, scope)
        return None

    # 4. Settle: a group commit per run and turn of the loop --------------------------
    def _settle(self, unit: Unit, terminal: Terminal, output: Any) -> asyncio.Future[None]:
        ending = Ending(
            unit, terminal, output, contextvars.copy_context(), self.loop.create_future()
        )
        batch = self._ending.setdefault(unit.ctx.run_id, [])
        if not batch:
            self.loop.call_soon(self._flush, unit.ctx.run_id)
        batch.append(ending)
        return ending.done

    def _flush(self, run_id: str) -> None:
        batch = self._ending.pop(run_id, [])
        if not batch:
            return
        ctx = batch[0].unit.ctx
        spare: Counter[str] = Counter()
        for e in batch:
            self.monitor.untrack(e.unit.tracked)
            if e.unit.claim.slot is not None:
                self.store.release_slot(e.unit.tracked.tool, e.unit.claim.slot)
            if not e.unit.freed and not self._hand_over(e.unit):
                spare[self.pool.kind(e.unit.lane)] += 1  # to pass on to what it makes ready
        asked = [self._ahead(ctx, e, spare) for e in batch]
        refill = self._refill(ctx, batch[0].unit.lane, spare)
        refill_reported = False

        def refilled(got: list[Claim]) -> None:
            nonlocal refill_reported
            refill_reported = True
            self._refilled(refill, got)

        self._spare = spare
        taken: list[Claim] = []
        try:
            nexts, taken = self.coordinator.settle(
                ctx,
                [(e.terminal, e.output, then) for e, then in zip(batch, asked, strict=True)],
                keep=self._keep,
                drops=self._take_drops(),
                scopes=[e.scope for e in batch],
                take=refill,
                taken=refilled,
            )
        except Exception:
            log.exception("run %s: completions not recorded (their leases bring them back)", run_id)
            nexts = [Next() for _ in batch]
            if refill is not None and not refill_reported:
                self.pool.release(refill.lane, refill.count)
            for then in asked:
                for claim in then:
                    self.pool.release(claim.lane)
            asked = [() for _ in batch]
        finally:
            self._spare = None
        if refill is not None:
            for c in taken:  # in the scope of the first unit that freed a slot
                self._launch(ctx, c, refill.lane, batch[0].scope)
        for e, then, nxt in zip(batch, asked, nexts, strict=True):
            self._drops.append((run_id, self.store.lease_member(e.terminal.unit, e.unit.lane)))
            self._next(ctx, e, then, nxt)
        for kind, count in spare.items():
            self.pool.release(self.pool.lane_of_kind(kind), count)
        for e in batch:
            if not e.done.done():
                e.done.set_result(None)

    def _refill(self, ctx: RunContext, lane: str, spare: Counter[str]) -> Refill | None:
        """What a group commit takes of its run's queued units with the slots it frees
        (and that nothing it makes ready claims first). While messages wait in the
        lane's queue (other runs, maybe) one of them is left to the queue, so that every
        run gets its turn; nothing while this worker drains."""
        kind = self.pool.kind(lane)
        n = spare[kind] - (1 if self.pool.backlog.get(lane) else 0)
        if n <= 0 or self.draining:
            return None
        spare[kind] -= n
        return Refill(lane, n, self.lease_ms, now_iso(), self.worker, self._limited(ctx)[1])

    def _refilled(self, refill: Refill | None, taken: list[Claim]) -> None:
        """The slots a group commit set aside for queued units and did not use are free
        again, before its dependents are decided."""
        if refill is not None:
            self.pool.release(refill.lane, refill.count - len(taken))

    def _hand_over(self, unit: Unit) -> bool:
        """A sync call that runs on (abandoned at its timeout or by a stop) keeps its slot
        until its thread returns; True if so."""
        call = unit.sync_call
        if call is None:
            return False
        lane = unit.lane
        return call.hand_over(lambda: self.pool.release(lane))

    def _free(self, unit: Unit) -> None:
        """A unit that could not be settled gives back its slot (its lease will expire)."""
        self.monitor.untrack(unit.tracked)
        if not unit.freed and not self._hand_over(unit):
            self.pool.release(unit.lane)

    # 5. Next: what runs here, what goes to the queue ---------------------------------
    def _ahead(self, ctx: RunContext, e: Ending, spare: Counter[str]) -> tuple[NextClaim, ...]:
        """Dependents this process would run next if this completion makes them ready
        with every dependency succeeded: claimed in the completion's round trip, each
        into a slot taken now (the one the unit frees first)."""
        if self.draining or e.terminal.status != "succeeded" or e.terminal.retry_ms is not None:
            return ()
        if e.unit.claim.unit.endswith("]"):
            return ()
        out: list[NextClaim] = []
        at = now_iso()
        dependents = ctx.dag.dependents[e.unit.claim.unit]
        for d in dependents:
            if len(out) == local_share(len(dependents)):
                break
            if len(ctx.dag.deps[d]) > AHEAD_MAX_DEPS or d not in ctx.scheduler.clean:
                continue
            lane = self._local_lane(ctx, d)
            if lane is None or not self._take_slot(lane, spare):
                continue
            out.append(NextClaim(d, new_token(), self.lease_ms, at, self.worker, lane))
        return tuple(out)

    def _local_lane(self, ctx: RunContext, step_id: str) -> str | None:
        """The lane a step would run in here, or None if it must go through the queue
        (a tool this process lacks or that has a concurrency limit, a queue it does not
        serve, or other units wait in the lane's queue while this process is full)."""
        step = ctx.dag.steps[step_id]
        tool = self._tool_of(step.tool)
        if tool is None or tool.max_concurrency or ctx.queue(step_id) not in self.settings.queues:
            return None
        lane = self.coordinator.lane(ctx, step_id)
        # Others wait for a slot here: queue it behind them (two runs share the pool).
        return None if self.pool.backlog.get(lane) else lane

    def _take_slot(self, lane: str, spare: Counter[str] | None) -> bool:
        kind = self.pool.kind(lane)
        if spare is not None and spare[kind] > 0:
            spare[kind] -= 1
            return True
        return self.pool.reserve(lane) == 1

    def _keep(self, ctx: RunContext, step_id: str) -> bool:
        """Run a decided step here: only into a free slot (the coordinator sends the
        others at once, for any worker)."""
        if self.draining:
            return False
        lane = self._local_lane(ctx, step_id)
        return lane is not None and self._take_slot(lane, self._spare)

    def _next(self, ctx: RunContext, e: Ending, then: tuple[NextClaim, ...], nxt: Next) -> None:
        ahead = {c.unit for c in nxt.ahead}
        lanes = {n.step: n.lane for n in then}
        for n in then:
            if n.step not in ahead:
                self.pool.release(n.lane)  # not made ready, or not claimable: slot back
        for c in nxt.ahead:
            self._launch(ctx, c, lanes[c.unit], e.scope)
        if nxt.kept:
            self._claim_kept(ctx, nxt.kept, e.scope)

    def _claim_kept(self, ctx: RunContext, kept: list[str], scope: contextvars.Context) -> None:
        by_lane: dict[str, list[str]] = {}
        for sid in kept:
            by_lane.setdefault(self.coordinator.lane(ctx, sid), []).append(sid)
        for lane, sids in by_lane.items():
            try:
                claims = self.store.claim_inplace(
                    ctx.run_id,
                    [(s, new_token()) for s in sids],
                    lane,
                    self.lease_ms,
                    now_iso(),
                    self.worker,
                    self._take_drops(),
                )
            except Exception:
                log.exception("run %s: kept steps not claimed (repair sends them)", ctx.run_id)
                self.pool.release(lane, len(sids))
                continue
            for c in claims:
                if c.kind == "ok":
                    self._launch(ctx, c, lane, scope)
                else:
                    self.pool.release(lane)

    def _take_drops(self) -> list[tuple[str, str]]:
        drops = []
        while self._drops:
            try:
                drops.append(self._drops.popleft())
            except IndexError:
                break
        return drops


def _step(unit: str) -> str:
    return unit.partition("[")[0]
