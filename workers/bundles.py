"""Bundles: several ready steps of a run in one message, claimed together, run at once.

A fan-out makes many steps ready at the same moment. One message per step pays the
broker's fixed cost (fetch, decode, middleware, ack) and a claim round trip per step;
a bundle pays them once for up to `BUNDLE_MAX` steps (see `Coordinator.send`). Each
step of a bundle is still claimed, leased, run, recorded and coordinated on its own, so
every guarantee holds step by step: a step another worker holds is skipped, a duplicate
bundle runs nothing twice, a dead worker's steps come back through their leases.

The steps run concurrently on the worker thread's event loop (sync tools in the tool
threads), each recorded as it ends (those that end in the same turn of the loop, in one
round trip); the dependents its completion keeps in place (see
`StepRuntime._can_continue`) start right away on the same loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Protocol

from executor.backends.redis.claims import Claim, new_token
from executor.backends.redis.coordinator import Keep, now_iso
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import RedisStore
from executor.model.spec import Step
from executor.model.tools import Tool, ToolRegistry
from workers.attempt import Attempts, Completing, Outcome, Records
from workers.settings import Settings
from workers.tracing import step_scope

log = logging.getLogger("dagrelay.worker")


class StepRuntime(Protocol):
    """What a bundle takes from the worker's runtime (`workers.runtime.StepRuntime`)."""

    settings: Settings
    registry: ToolRegistry
    store: RedisStore
    attempts: Attempts

    @property
    def worker(self) -> str: ...

    def _loop(self) -> asyncio.AbstractEventLoop: ...

    def _continue(
        self,
        ctx: RunContext,
        step_id: str,
        keep: Keep | None,
        attempt: int = 1,
        inplace: bool = True,
    ) -> None: ...

    def _preclaimed(self) -> dict[str, Claim]: ...

    def _take_drops(self) -> list[str]: ...

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
    ) -> Completing | None: ...

    def _complete(
        self,
        ctx: RunContext,
        items: list[Completing],
        keep: Keep | None,
        scopes: list[contextvars.Context] | None = None,
    ) -> list[list[str]]: ...


def run_bundle(
    rt: StepRuntime,
    ctx: RunContext,
    step_ids: list[str],
    attempt: int,
    inplace: bool,
    keep: Keep | None,
) -> None:
    """Claim, run and record the steps of a bundle, and what they unlock and keep."""
    simple = [s for s in step_ids if _simple(rt, ctx, s)]
    loop = rt._loop()
    kept = loop.run_until_complete(_Drive(rt, ctx, keep, loop).run(simple, attempt, inplace))
    # Steps that need a tool slot, map items or a missing tool take the usual path.
    for sid in step_ids:
        if sid not in simple:
            rt._continue(ctx, sid, keep, attempt, inplace)
    for sid, scope in kept:  # in the scope of the step that kept it
        scope.run(rt._continue, ctx, sid, keep)


def _simple(rt: StepRuntime, ctx: RunContext, step_id: str) -> bool:
    step = ctx.dag.steps[step_id]
    tool = rt.registry.get(step.tool) if step.tool in rt.registry else None
    return tool is not None and tool.max_concurrency is None and step.map is None


class _Drive:
    """Steps of one run as tasks of this thread's loop. Steps that end in the same turn of
    the loop are recorded together, in one round trip (group commit), and the steps
    those completions keep start right from it, beside the others."""

    def __init__(
        self, rt: StepRuntime, ctx: RunContext, keep: Keep | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.rt, self.ctx, self.keep, self.loop = rt, ctx, keep, loop
        self.tasks = 0  # steps running
        # Steps to record in the next flush: each with its scope (its span and log ids,
        # to coordinate in) and what its task waits on meanwhile.
        self.ending: list[tuple[Completing, contextvars.Context, asyncio.Future[None]]] = []
        # Kept steps that need the usual path, with the scope of the step that kept each.
        self.later: list[tuple[str, contextvars.Context]] = []
        self.errors: list[BaseException] = []
        self.idle: asyncio.Future[None] = loop.create_future()

    async def run(
        self, step_ids: list[str], attempt: int, inplace: bool
    ) -> list[tuple[str, contextvars.Context]]:
        """Returns the kept steps that need the usual path."""
        if step_ids:
            self.start(step_ids, attempt, inplace)
        self._check_idle()
        await self.idle
        if self.errors:  # the others were recorded first; these steps' leases bring them back
            raise self.errors[0]
        return self.later

    def start(self, ids: list[str], attempt: int, inplace: bool) -> None:
        rt, ctx = self.rt, self.ctx
        ahead = rt._preclaimed()
        pre = {s: ahead.pop(s) for s in ids if s in ahead}  # claimed with their dependency
        for sid, claim in pre.items():
            self._spawn(sid, claim)
        ids = [s for s in ids if s not in pre]
        if not ids:
            return
        claims = rt.store.claim_many(
            ctx.run_id,
            [(sid, attempt, new_token(), ctx.needs[sid]) for sid in ids],
            int(rt.settings.lease_seconds * 1000),
            now_iso(),
            rt.worker,
            inplace=inplace,
            drop_hints=rt._take_drops(),
        )
        for sid, claim in zip(ids, claims, strict=True):
            if claim.kind == "ok":
                self._spawn(sid, claim)
            else:
                log.debug("run %s step %s: %s (%s)", ctx.run_id, sid, claim.kind, claim.detail)

    def _spawn(self, step_id: str, claim: Claim) -> None:
        self.tasks += 1
        self.loop.create_task(self.step(step_id, claim)).add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks -= 1
        if not task.cancelled() and task.exception() is not None:  # Redis gone too long
            self.errors.append(task.exception())  # type: ignore[arg-type]
        self._check_idle()

    def _check_idle(self) -> None:
        if not self.tasks and not self.ending and not self.idle.done():
            self.idle.set_result(None)

    async def step(self, step_id: str, claim: Claim) -> None:
        rt, ctx = self.rt, self.ctx
        step = ctx.dag.steps[step_id]
        tool = rt.registry.get(step.tool)
        # The span stays open until the step is recorded and coordinated (in its scope).
        with step_scope(ctx.run_id, step_id, claim.attempt, rt.worker, step.tool):
            records = rt.attempts.begin(step, claim)
            outcome = await rt.attempts.run_async(ctx, step, tool, claim, records)
            item = rt._outcome(ctx, step, tool, claim, records, outcome, self.keep, True)
            if item is not None:  # else retried: sent again
                await self.record(item)

    def record(self, item: Completing) -> asyncio.Future[None]:
        """Record a step's end with the others that end in this turn of the loop."""
        if not self.ending:
            self.loop.call_soon(self.flush)
        recorded = self.loop.create_future()
        self.ending.append((item, contextvars.copy_context(), recorded))
        return recorded

    def flush(self) -> None:
        batch, self.ending = self.ending, []
        rt, ctx = self.rt, self.ctx
        try:
            scopes = [scope for _, scope, _ in batch]
            for kept, scope in zip(
                rt._complete(ctx, [item for item, _, _ in batch], self.keep, scopes),
                scopes,
                strict=True,
            ):
                self.later += [(k, scope) for k in kept if not _simple(rt, ctx, k)]
                if simple := [k for k in kept if _simple(rt, ctx, k)]:
                    scope.run(self.start, simple, 1, True)  # their spans: children of its
        except Exception as exc:
            self.errors.append(exc)
        for _, _, recorded in batch:
            if not recorded.done():  # a step its run's stop cancelled meanwhile
                recorded.set_result(None)
        self._check_idle()
